"""The start-up check for duplicate images (datasets.duplicates) on generated JPEGs of CUB's size,
against hashing every whole file in one thread, measured in the same run.

    python -m benchmarks.duplicates [--images 5000] [--threads 1 2] [--folder DIR]

The images (500 x 375, smooth content plus noise, about 50 KB each as CUB's are) are written once
into --folder (default: a temporary folder) and split into two halves, train and test, compared
within and across as a run compares them. Times are the best of --repeats, the files in the page
cache (the first read of a cold disk is bounded by the disk instead).
"""
import glob
import os
import tempfile
import time

import numpy as np
from PIL import Image

from datasets import duplicates
from datasets.image_dataset import ImageDataset
from errors import CommandParser


def write_images(folder, count, seed=0):
    """`count` distinct JPEGs under folder/<nnn>/, reused when already there."""
    paths = sorted(glob.glob(os.path.join(folder, "*", "*.jpg")))
    if len(paths) >= count:
        return paths[:count]
    rng = np.random.default_rng(seed)
    paths = []
    for number in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize((500, 375),
                                                                                           Image.BILINEAR)
        pixels = np.asarray(coarse).astype(np.int16) + rng.integers(-8, 9, (375, 500, 3))
        path = os.path.join(folder, f"{number % 100:03d}", f"{number}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return sorted(paths)


def best_time(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    parser = CommandParser(command="python -m benchmarks.duplicates", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", default=None, help="where the images are written (default: a temporary folder)")
    opt = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        paths = write_images(opt.folder or temporary, opt.images)
        sizes = [os.path.getsize(path) for path in paths]
        counts = {size: sizes.count(size) for size in set(sizes)}
        shared = sum(1 for size in sizes if counts[size] > 1)
        half = len(paths) // 2
        splits = {"train": ImageDataset(np.zeros(half, dtype=np.int64), ["a"], paths=paths[:half]),
                  "test": ImageDataset(np.zeros(len(paths) - half, dtype=np.int64), ["a"], paths=paths[half:])}
        print(f"{len(paths)} JPEGs of 500 x 375, {sum(sizes) / 1e6:.0f} MB, {shared} sharing their size with another")
        baseline, _ = best_time(lambda: [duplicates._digest(path) for path in paths], opt.repeats)
        print(f"{'every whole file hashed, 1 thread':>36}: {baseline:6.2f} s")
        for threads in opt.threads:
            seconds, found = best_time(lambda: duplicates.find(splits, threads), opt.repeats)
            print(f"{f'duplicates.find, {threads} thread(s)':>36}: {seconds:6.2f} s ({len(found)} duplicates, "
                  f"{len(paths) / seconds:,.0f} images/s)")


if __name__ == "__main__":
    main()
