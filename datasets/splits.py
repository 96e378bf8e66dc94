"""Holding out part of the training split for validation, so checkpoint selection never sees test."""
import numpy as np

from datasets.image_dataset import ImageDataset
from errors import UserError


def split_train_val(train: ImageDataset, perc: float, by_samples: bool) -> tuple[ImageDataset, ImageDataset]:
    """By classes: the first round(perc * n_classes) classes train, the others validate, each
    relabelled 0..k-1. By samples: each class keeps its first round(perc * n) images (at least one)
    for training and validates on the rest; both splits keep the training labels and class names."""
    if not 0 < perc < 1:
        raise UserError(f"--tv_split_perc must lie strictly between 0 and 1, got {perc}")
    if by_samples:
        is_train = _rank_in_class(train.labels) < _images_to_keep(train.labels, perc)
        if is_train.all():
            raise UserError(f"--tv_split_perc {perc} leaves no image for validation, the training classes "
                            "are too small; lower --tv_split_perc or drop --tv_split_by_samples")
    else:
        n_train_classes = round(perc * train.n_classes)
        if not 0 < n_train_classes < train.n_classes:
            raise UserError(f"--tv_split_perc {perc} splits the {train.n_classes} training classes into "
                            f"{n_train_classes} train and {train.n_classes - n_train_classes} validation "
                            "classes; each side needs at least one: change --tv_split_perc")
        is_train = train.labels < n_train_classes
    relabel = not by_samples
    return (train.subset(np.flatnonzero(is_train), relabel),
            train.subset(np.flatnonzero(~is_train), relabel))


def without_last_classes(train: ImageDataset, n: int) -> ImageDataset:
    """The split without its last `n` classes (in label order): the classes the unseen-class
    protocol holds out of training."""
    if not 0 < n < train.n_classes:
        raise UserError(f"--holdout_classes {n} must leave between 1 and {train.n_classes - 1} of the "
                        f"{train.n_classes} training classes out; change --holdout_classes")
    return train.subset(np.flatnonzero(train.labels < train.n_classes - n))


def _rank_in_class(labels: np.ndarray) -> np.ndarray:
    """For each image, how many images of its class come before it."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    class_starts = np.cumsum(counts) - counts
    ranks = np.empty(len(labels), dtype=np.int64)
    ranks[order] = np.arange(len(labels)) - np.repeat(class_starts, counts)
    return ranks


def _images_to_keep(labels: np.ndarray, perc: float) -> np.ndarray:
    """Per image, how many images of its class stay in training."""
    counts = np.bincount(labels)
    return np.maximum(1, np.round(perc * counts)).astype(np.int64)[labels]
