"""Holding out part of the training split for validation, so checkpoint selection never sees test.

The rules are the released code's (Revisiting-DML's dataset files), `int()` truncation included:
- by classes: the first int(perc * n) classes train, the others validate; on a dataset with
  super-categories (Stanford Online Products) the first int(perc * n) classes of EACH
  super-category, in class-id order;
- by samples: of each class of n images, int(perc * n) train. "spaced" takes the images at the
  positions round(linspace(0, n - 1, int(perc * n))) of the class, evenly spread over it (CUB200's
  file); "first" takes the first int(perc * n) (Stanford Online Products' file).
Where int(perc * n) is 0 the released code crashes; here one image or class is kept instead.
"""
import numpy as np

from datasets.image_dataset import ImageDataset
from errors import UserError, counted

SAMPLE_RULES = ("spaced", "first")


def split_train_val(train: ImageDataset, perc: float, by_samples: bool,
                    sample_rule: str = "spaced") -> tuple[ImageDataset, ImageDataset]:
    """(train, val). By classes, both are relabelled 0..k-1; by samples, both keep the training
    labels and class names."""
    if not 0 < perc < 1:
        raise UserError(f"--tv_split_perc must lie strictly between 0 and 1, got {perc}")
    if by_samples:
        is_train = _train_samples(train.labels, perc, sample_rule)
        if is_train.all():
            raise UserError(f"--tv_split_perc {perc} leaves no image for validation, the training classes "
                            "are too small; lower --tv_split_perc or drop --tv_split_by_samples")
    else:
        is_train = _train_classes(train, perc)[train.labels]
        n_train_classes = len(np.unique(train.labels[is_train]))
        if not 0 < n_train_classes < train.n_classes:
            raise UserError(f"--tv_split_perc {perc} splits the {train.n_classes} training classes into "
                            f"{n_train_classes} train and {train.n_classes - n_train_classes} validation "
                            "classes; each side needs at least one: change --tv_split_perc")
    relabel = not by_samples
    return (train.subset(np.flatnonzero(is_train), relabel),
            train.subset(np.flatnonzero(~is_train), relabel))


def class_folds(train: ImageDataset, folds: int, fold: int) -> tuple[ImageDataset, ImageDataset]:
    """(train, val) of class-disjoint cross-validation ("A Metric Learning Reality Check", Musgrave
    et al. 2020): the training classes, in label order, cut into `folds` contiguous blocks of sizes
    differing by one at most; block `fold` validates, the others train. Both are relabelled 0..k-1."""
    if not 2 <= folds <= train.n_classes:
        fix = f"use 2 to {train.n_classes} folds" if train.n_classes >= 2 else "drop --folds"
        raise UserError(f"--folds {folds}: the training split has {counted(train.n_classes, 'class', 'classes')}, too "
                        f"few for {folds} class-disjoint folds; {fix}")
    if not 0 <= fold < folds:
        raise UserError(f"--fold {fold} is not one of the {folds} folds 0-{folds - 1}")
    validating = np.isin(train.labels, np.array_split(np.arange(train.n_classes), folds)[fold])
    return train.subset(np.flatnonzero(~validating), True), train.subset(np.flatnonzero(validating), True)


def without_last_classes(train: ImageDataset, n: int) -> ImageDataset:
    """The split without its last `n` classes (in label order): the classes the unseen-class
    protocol holds out of training."""
    if not 0 < n < train.n_classes:
        raise UserError(f"--holdout_classes {n} must leave between 1 and {train.n_classes - 1} of the "
                        f"{train.n_classes} training classes out; change --holdout_classes")
    return train.subset(np.flatnonzero(train.labels < train.n_classes - n))


def _train_classes(train: ImageDataset, perc: float) -> np.ndarray:
    """Per class: whether it stays in training."""
    if train.super_labels is None:
        return np.arange(train.n_classes) < int(train.n_classes * perc)
    class_super = np.zeros(train.n_classes, dtype=np.int64)
    class_super[train.labels] = train.super_labels
    keep = np.zeros(train.n_classes, dtype=bool)
    for super_label in np.unique(class_super):
        members = np.flatnonzero(class_super == super_label)  # in label order, which is class-id order
        keep[members[:int(len(members) * perc)]] = True
    return keep


def _train_samples(labels: np.ndarray, perc: float, rule: str) -> np.ndarray:
    """Per image: whether it stays in training."""
    if rule not in SAMPLE_RULES:
        raise ValueError(f"unknown sample split rule {rule!r}; one of {', '.join(SAMPLE_RULES)}")
    counts = np.bincount(labels)
    kept = np.maximum(1, (counts * perc).astype(np.int64))
    rank = _rank_in_class(labels)
    if rule == "first":
        return rank < kept[labels]
    is_train = np.zeros(len(labels), dtype=bool)
    order = np.argsort(labels, kind="stable")
    class_starts = np.cumsum(counts) - counts
    for label in np.flatnonzero(counts):
        positions = np.unique(np.round(np.linspace(0, counts[label] - 1, kept[label]))).astype(np.int64)
        is_train[order[class_starts[label] + positions]] = True
    return is_train


def _rank_in_class(labels: np.ndarray) -> np.ndarray:
    """For each image, how many images of its class come before it."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    class_starts = np.cumsum(counts) - counts
    ranks = np.empty(len(labels), dtype=np.int64)
    ranks[order] = np.arange(len(labels)) - np.repeat(class_starts, counts)
    return ranks
