"""A labelled image set read from files or from an in-memory uint8 array."""
import copy
import multiprocessing
import os
import signal

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from errors import UserError


def load_rgb(path: str) -> Image.Image:
    """The image at `path` as RGB, whatever its mode (L, P, CMYK, RGBA, 16-bit ...)."""
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(f"cannot read image {path}: {error}; remove or replace the file, "
                        "or pass --on_bad_image skip") from None


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "F":
        # PIL's own conversion casts float pixels to 0..255, so intensities in [0, 1] turn black
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float64))
        low, high = pixels.min(), pixels.max()
        if low < 0 or high > 65535:
            raise ValueError(f"float pixels from {low:g} to {high:g}, outside [0, 1], [0, 255] and [0, 65535]; "
                             "save it as an 8- or 16-bit image")
        scale = 255 if high <= 1 else 1 if high <= 255 else 1 / 257
        return Image.fromarray(np.round(pixels * scale).astype(np.uint8)).convert("RGB")
    if image.mode.startswith("I"):
        # PIL's own conversion clips 16-bit values at 255, turning the image white
        pixels = np.asarray(image, dtype=np.float32) / 257
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    elif image.mode == "P" and "transparency" in image.info:
        # PIL warns when a palette with transparency goes straight to RGB
        image = image.convert("RGBA")
    return image.convert("RGB")


class ImageDataset(Dataset):
    """(image tensor, label) pairs; `paths` holds the image files, or is None when `pixels`
    (N x H x W uint8) holds the images. Labels are 0..n_classes-1, named by `class_names`.
    `super_labels`, where the dataset has super-categories (Stanford Online Products), gives
    each image's. Where the paths come from a list file, `listed_in` names it and `list_lines`
    gives each image's line there, for error messages."""

    def __init__(self, labels, class_names, *, paths=None, pixels=None, transform=None, super_labels=None,
                 listed_in=None, list_lines=None):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.listed_in = listed_in
        self.list_lines = None if list_lines is None else np.asarray(list_lines, dtype=np.int64)
        self.super_labels = None if super_labels is None else np.asarray(super_labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.paths = paths
        self.pixels = pixels
        self.transform = transform
        self.bad_files = []  # files of the dataset's folders that are not readable images

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        if self.paths is None:
            image = Image.fromarray(self.pixels[index]).convert("RGB")
        else:
            image = load_rgb(self.paths[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def with_transform(self, transform) -> "ImageDataset":
        view = copy.copy(self)
        view.transform = transform
        return view

    def subset(self, indices: np.ndarray, relabel: bool = True) -> "ImageDataset":
        """The images at `indices`; `relabel` renumbers their classes 0..k-1 in label order,
        otherwise they keep this dataset's labels and class names."""
        labels, class_names = self.labels[indices], self.class_names
        if relabel:
            kept_classes, labels = np.unique(labels, return_inverse=True)
            class_names = [self.class_names[label] for label in kept_classes]
        subset = ImageDataset(labels, class_names,
                              paths=None if self.paths is None else [self.paths[i] for i in indices],
                              pixels=None if self.pixels is None else self.pixels[indices],
                              transform=self.transform,
                              super_labels=None if self.super_labels is None else self.super_labels[indices],
                              listed_in=self.listed_in,
                              list_lines=None if self.list_lines is None else self.list_lines[indices])
        subset.bad_files = self.bad_files
        return subset


    def where(self, index: int) -> str:
        """Image `index`'s file, and where it is listed when it comes from a list file."""
        if self.list_lines is None:
            return self.paths[index]
        return f"{self.paths[index]} ({self.listed_in} line {self.list_lines[index]})"


def unusable_files(dataset: ImageDataset) -> dict[int, str]:
    """{index: "missing" or "empty"} for the dataset's files that do not exist or hold nothing:
    one stat a file, so that a run finds them before it trains, not hours later."""
    if dataset.paths is None:
        return {}
    unusable = {}
    for index, path in enumerate(dataset.paths):
        try:
            if os.stat(path).st_size == 0:
                unusable[index] = "empty"
        except OSError:
            unusable[index] = "missing"
    return unusable


def is_readable(path: str) -> bool:
    try:
        load_rgb(path)
        return True
    except UserError:
        return False


def default_signal_handlers():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides


def without_unreadable(dataset: ImageDataset, workers: int = 0) -> ImageDataset:
    """The dataset without the images that do not decode, which join `bad_files`.

    Every image is decoded once, in `workers` processes, so truncated files are caught too.
    """
    if dataset.paths is None:
        return dataset
    progress = {"total": len(dataset.paths), "desc": "decoding every image", "leave": False, "disable": None}
    if workers > 0:
        # The workers take the default signal handlers: the pool ends them with SIGTERM, which the
        # command's own handler (errors.run_command) would turn into an exception inside a worker.
        with multiprocessing.Pool(workers, initializer=default_signal_handlers) as pool:
            readable = np.array(list(tqdm(pool.imap(is_readable, dataset.paths, chunksize=64), **progress)), dtype=bool)
    else:
        readable = np.array([is_readable(path) for path in tqdm(dataset.paths, **progress)], dtype=bool)
    if readable.all():
        return dataset
    kept = dataset.subset(np.flatnonzero(readable))
    kept.bad_files = dataset.bad_files + [path for path, ok in zip(dataset.paths, readable) if not ok]
    return kept
