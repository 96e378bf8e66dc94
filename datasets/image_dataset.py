"""A labelled image set read from files or from an in-memory uint8 array."""
import copy
import hashlib
import multiprocessing
import os
import signal
import stat
import tempfile
import zipfile

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
        self.duplicates = []  # the copies found (datasets.duplicates; left out under "drop"), each described
        self.conflicts = []  # those of them under another class than their original

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
        subset.duplicates = self.duplicates
        subset.conflicts = self.conflicts
        return subset


    def where(self, index: int) -> str:
        """Image `index`'s file, and where it is listed when it comes from a list file."""
        if self.list_lines is None:
            return self.paths[index]
        return f"{self.paths[index]} ({self.listed_in} line {self.list_lines[index]})"


def unusable_files(dataset: ImageDataset) -> dict[int, str]:
    """{index: "missing", "empty" or "a folder, not a file"} for the dataset's files that cannot be
    images: one stat a file, so that a run finds them before it trains, not hours later."""
    if dataset.paths is None:
        return {}
    unusable = {}
    for index, path in enumerate(dataset.paths):
        try:
            status = os.stat(path)
        except OSError:
            unusable[index] = "missing"
            continue
        if not stat.S_ISREG(status.st_mode):
            unusable[index] = "a folder, not a file" if stat.S_ISDIR(status.st_mode) else "not a regular file"
        elif status.st_size == 0:
            unusable[index] = "empty"
    return unusable


def decodes(path: str) -> bool:
    try:
        load_rgb(path)
        return True
    except UserError:
        return False


def cache_folder() -> str:
    """Where the decoding check keeps what it found: $OBD_SD_CACHE, else $XDG_CACHE_HOME/obd-sd, else
    ~/.cache/obd-sd."""
    if os.environ.get("OBD_SD_CACHE"):
        return os.environ["OBD_SD_CACHE"]
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "obd-sd")


def _file_stamps(paths: list[str]) -> np.ndarray:
    """(size, modification time in ns) of each file; (-1, -1) where it cannot be read."""
    stamps = np.full((len(paths), 2), -1, dtype=np.int64)
    for index, path in enumerate(paths):
        try:
            status = os.stat(path)
            stamps[index] = status.st_size, status.st_mtime_ns
        except OSError:
            pass
    return stamps


def _cache_file(paths: list[str]) -> str:
    key = hashlib.sha256("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(cache_folder(), "decoded", f"{key}.npz")


def _cached_decodes(cache: str, stamps: np.ndarray) -> np.ndarray:
    """Per file: 1 decodes, 0 does not, -1 unknown (not in the cache, or changed since)."""
    known = np.full(len(stamps), -1, dtype=np.int8)
    try:
        with np.load(cache) as stored:
            if stored["stamps"].shape == stamps.shape:
                same = (stored["stamps"] == stamps).all(axis=1) & (stamps[:, 0] >= 0)
                known[same] = stored["decodes"][same]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # no cache yet, or a damaged one: decode again
    return known


def _store_decodes(cache: str, stamps: np.ndarray, readable: np.ndarray):
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        # written beside, then renamed: a process reading it at the same time sees the old file or the new one
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(cache), suffix=".npz")
        with os.fdopen(handle, "wb") as file:
            np.savez(file, stamps=stamps, decodes=readable.astype(np.int8))
        os.replace(temporary, cache)
    except OSError:
        pass  # a cache that cannot be written (read-only home): decoding again next time is slower, not wrong


def default_signal_handlers():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides


def readable_images(paths: list[str], workers: int = 0) -> np.ndarray:
    """Whether each file decodes as an image. Every file is decoded once, truncated ones caught too,
    in `workers` processes; what was found is kept (cache_folder()) with each file's size and
    modification time, and a file that has neither changed is not decoded again."""
    stamps = _file_stamps(paths)
    cache = _cache_file(paths)
    known = _cached_decodes(cache, stamps)
    todo = np.flatnonzero(known < 0)
    if len(todo):
        progress = {"total": len(todo), "desc": "decoding the images (once; then when changed)", "leave": False,
                    "disable": None}
        pending = [paths[index] for index in todo]
        if workers > 0:
            # The workers take the default signal handlers: the pool ends them with SIGTERM, which the
            # command's own handler (errors.run_command) would turn into an exception inside a worker.
            with multiprocessing.Pool(workers, initializer=default_signal_handlers) as pool:
                found = list(tqdm(pool.imap(decodes, pending, chunksize=64), **progress))
        else:
            found = [decodes(path) for path in tqdm(pending, **progress)]
        known[todo] = found
        _store_decodes(cache, stamps, known > 0)
    return known > 0


def without_unreadable(dataset: ImageDataset, workers: int = 0) -> ImageDataset:
    """The dataset without the images that do not decode (readable_images), which join `bad_files`."""
    if dataset.paths is None:
        return dataset
    readable = readable_images(dataset.paths, workers)
    if readable.all():
        return dataset
    kept = dataset.subset(np.flatnonzero(readable))
    kept.bad_files = dataset.bad_files + [path for path, ok in zip(dataset.paths, readable) if not ok]
    return kept
