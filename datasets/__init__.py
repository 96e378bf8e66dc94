"""Datasets by name: `load(DataSettings)` (or `select(name, source, ...)`) returns the splits with
their transforms attached; `facts(name)` the published counts, the metrics its papers report and
its evaluation protocol."""
import os
from dataclasses import dataclass, replace

import numpy as np

from datasets import (  # noqa: F401  (the loader modules fill the registry)
    cars196,
    cub200,
    digits,
    folder,
    inat2018,
    inshop,
    list_files,
    online_products,
    tsinghua_dogs,
)
from datasets.duplicates import DUPLICATE_POLICIES
from datasets.duplicates import apply_policy as apply_duplicates_policy
from datasets.image_dataset import ImageDataset, readable_images, unusable_files, without_unreadable
from datasets.list_files import LIST_INPUTS
from datasets.registry import LOADERS, Loader
from datasets.splits import class_folds, split_train_val, without_last_classes
from datasets.transforms import (
    AUGMENTATIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
)
from errors import SettingError, UserError

BAD_IMAGE_POLICIES = ("fail", "skip")


@dataclass(frozen=True)
class DataSettings:
    """What a run trains and evaluates on: the dataset `dataset` at `source` (its folder or the
    parent of it; the list files for `list`), the training augmentation, an optional validation
    split cut out of the training data (by `tv_split_perc`, or fold `fold` of `folds` class-disjoint
    folds of the training classes, as "A Metric Learning Reality Check" cross-validates), the policy
    for files that are not images and the one for duplicate images (datasets.duplicates), and the
    last `holdout_classes` training classes left out of training."""
    dataset: str = "cub200"
    source: str | None = None
    augmentation: str = "base"
    use_tv_split: bool = False
    tv_split_perc: float = 0.8
    tv_split_by_samples: bool = False
    on_bad_image: str = "fail"
    duplicates: str = "fail"
    holdout_classes: int = 0
    folds: int = 0
    fold: int = 0
    train_list: str | None = None
    test_list: str | None = None
    val_list: str | None = None

    def __post_init__(self):
        LOADERS.get(self.dataset)
        for name in LIST_INPUTS:
            # The lists define the data of dataset list: a path relative to the folder a command ran
            # in would name other data from another folder (in a run's record, to studies.summarize).
            if getattr(self, name):
                object.__setattr__(self, name, os.path.abspath(getattr(self, name)))
        problems = []
        if self.augmentation not in AUGMENTATIONS:
            problems.append((f"augmentation must be one of {', '.join(AUGMENTATIONS)}, not {self.augmentation!r}",
                             ["augmentation"]))
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            problems.append((f"on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}, not "
                             f"{self.on_bad_image!r}", ["on_bad_image"]))
        if self.duplicates not in DUPLICATE_POLICIES:
            problems.append((f"duplicates must be one of {', '.join(DUPLICATE_POLICIES)}, not {self.duplicates!r}",
                             ["duplicates"]))
        if not 0 < self.tv_split_perc < 1:
            problems.append((f"tv_split_perc must lie in (0, 1), got {self.tv_split_perc}", ["tv_split_perc"]))
        if self.folds and (self.folds < 2 or not 0 <= self.fold < self.folds):
            problems.append((f"folds must be 0 (off) or 2 or more, and fold one of 0-{max(self.folds, 1) - 1}; got "
                             f"folds {self.folds}, fold {self.fold}", ["folds", "fold"]))
        if self.folds and self.use_tv_split:
            problems.append(("folds cuts the validation split out of the training classes, as use_tv_split "
                             "does; drop one of them", ["folds", "use_tv_split"]))
        if self.holdout_classes < 0:
            problems.append((f"holdout_classes must be 0 (off) or more, got {self.holdout_classes}",
                             ["holdout_classes"]))
        given = [name for name in LIST_INPUTS if getattr(self, name)]
        if self.dataset != "list" and given:
            problems.append((f"{given[0]} names the files of dataset list; drop it or use dataset list",
                             [given[0], "dataset"]))
        if self.dataset == "list" and not (self.train_list and self.test_list):
            problems.append(("dataset list needs train_list FILE and test_list FILE (and optionally val_list)",
                             ["dataset", "train_list", "test_list", "val_list"]))
        if problems:
            raise SettingError(*problems[0])

    def lists(self) -> dict:
        """The list files of the `list` dataset, by input name."""
        return {name: getattr(self, name) for name in LIST_INPUTS}


def names() -> list[str]:
    return LOADERS.names()


def facts(name: str) -> Loader:
    """The registry entry of a dataset: its published counts, the metrics its papers report, its
    default protocol, the preprocessing it fixes."""
    return LOADERS.get(name)


def default_protocol(name: str) -> str:
    """How the dataset's evaluation splits are ranked unless the settings say otherwise."""
    return facts(name).default_protocol


def load(settings: DataSettings, workers: int = 0, **preprocessing) -> dict[str, ImageDataset]:
    """The splits `settings` describe (see `select`), under the `preprocessing` of the network that
    will see them (architectures.preprocessing), files decoded in `workers` processes."""
    return select(settings.dataset, settings.source, augmentation=settings.augmentation,
                  use_tv_split=settings.use_tv_split, tv_split_perc=settings.tv_split_perc,
                  tv_split_by_samples=settings.tv_split_by_samples, on_bad_image=settings.on_bad_image,
                  duplicates=settings.duplicates,
                  workers=workers, holdout_classes=settings.holdout_classes, folds=settings.folds, fold=settings.fold,
                  lists=settings.lists(), **preprocessing)


def dataset_preprocessing(name: str, backbone: Preprocessing, image_size: int | None = None) -> Preprocessing:
    """The backbone's input with what the dataset fixes (digits' small crops); `image_size`, when
    given, is the crop there too, the resize keeping the dataset's crop fraction."""
    fixed = LOADERS.get(name).preprocessing
    preprocessing = replace(backbone, **fixed)
    if image_size and "crop_size" in fixed:
        preprocessing = replace(preprocessing, crop_size=image_size,
                                resize_size=image_size * preprocessing.resize_size // preprocessing.crop_size)
    return preprocessing


def select(name: str, source: str | None, *, augmentation: str = "base", crop_size: int = 224,
           resize_size: int = 256, mean=IMAGENET_MEAN, std=IMAGENET_STD, use_tv_split: bool = False,
           tv_split_perc: float = 0.8, tv_split_by_samples: bool = False, on_bad_image: str = "fail",
           duplicates: str = "fail",
           workers: int = 0, channel_order: str = "RGB", input_range: float = 1.0, interpolation: str = "bilinear",
           holdout_classes: int = 0, folds: int = 0, fold: int = 0,
           lists: dict | None = None, image_size: int | None = None) -> dict[str, ImageDataset]:
    """{"train", "val" (with use_tv_split, or fold `fold` of `folds` class-disjoint folds of the
    training classes), "test"} or, for a dataset evaluated query against
    gallery, {"train", "val", "query", "gallery"}: train with `augmentation`, the others with the
    evaluation resize + centre crop. `source` is the dataset folder or its parent.
    `lists` ({"train_list", "test_list", "val_list"}) names the list files of the `list` dataset.
    `holdout_classes` N leaves the last N classes out of "train" (after the validation split, which
    keeps them). `image_size` (--image_size), when given, is the crop also where the dataset fixes
    its own (digits), the resize keeping the dataset's crop fraction.

    Every image is decoded up front (in `workers` processes; a file unchanged since it was last
    decoded is not decoded again, see image_dataset.readable_images). on_bad_image "fail" stops at
    a file that is not a readable image (missing, empty, a folder, not an image, undecodable);
    "skip" leaves the bad files out, listed in each split's `bad_files`. A split without images
    is an error.

    duplicates (datasets.duplicates: the same file twice, or files of one content, within a split
    or between splits that meet): "fail" stops at them with their count and the first ones; "warn"
    ranks them as listed, as the released code does, each copy named in its split's `duplicates`
    for `duplicates.note` to warn of; "drop" leaves the copies out, listed in each split's
    `duplicates`; "keep" ranks them as listed without looking for them."""
    loader = LOADERS.get(name)
    if augmentation not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation {augmentation!r}; choose one of {', '.join(AUGMENTATIONS)}")
    preprocessing = dataset_preprocessing(name, Preprocessing(crop_size, resize_size, tuple(mean), tuple(std),
                                                              channel_order=channel_order, input_range=input_range,
                                                              interpolation=interpolation), image_size)
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise UserError(f"unknown --on_bad_image {on_bad_image!r}; choose one of {', '.join(BAD_IMAGE_POLICIES)}")
    loaded = loader.load(source, **{key: value for key, value in (lists or {}).items() if value})
    parts = loaded if isinstance(loaded, dict) else dict(zip(("train", "test"), loaded))
    if (use_tv_split or folds) and "val" in parts:
        raise UserError(f"{name} has its own validation split; drop --{'folds' if folds else 'use_tv_split'}")
    for split, dataset in parts.items():
        if len(dataset) == 0:
            where = f"{dataset.listed_in} lists no images" if dataset.listed_in else f"{name} has no {split} images"
            raise UserError(f"{where}; the {split} split needs images: give the file that lists them")
    parts = {split: _apply_bad_image_policy(dataset, on_bad_image, workers) for split, dataset in parts.items()}
    for split, dataset in parts.items():
        if len(dataset) == 0:
            listed = f" listed in {dataset.listed_in}" if dataset.listed_in else ""
            raise UserError(f"the {split} split has no readable image left: its {len(dataset.bad_files)} file(s)"
                            f"{listed} are all missing, empty or not images (first: {dataset.bad_files[0]}); "
                            "restore them")
    # before a split is cut out of another: a copy must not land on both sides of the cut
    parts = apply_duplicates_policy(parts, duplicates, workers)
    splits = {"train": parts.pop("train")}
    if "val" in parts:
        splits["val"] = parts.pop("val")
    if use_tv_split:
        splits["train"], splits["val"] = split_train_val(splits["train"], tv_split_perc, tv_split_by_samples,
                                                         loader.sample_split)
    if folds:
        splits["train"], splits["val"] = class_folds(splits["train"], folds, fold)
    if holdout_classes:
        splits["train"] = without_last_classes(splits["train"], holdout_classes)
    splits.update(parts)
    training, evaluation = preprocessing.training(augmentation), preprocessing.evaluation(augmentation)
    return {split: dataset.with_transform(training if split == "train" else evaluation)
            for split, dataset in splits.items()}


def _apply_bad_image_policy(dataset: ImageDataset, on_bad_image: str, workers: int) -> ImageDataset:
    unusable = unusable_files(dataset)
    if unusable and on_bad_image == "fail":
        first = "; ".join(f"{dataset.where(index)} is {reason}" for index, reason in list(unusable.items())[:3])
        raise UserError(f"{len(unusable)} image file(s) missing or empty: {first}; restore them or pass "
                        "--on_bad_image skip")
    if unusable:
        kept = dataset.subset(np.flatnonzero(~np.isin(np.arange(len(dataset)), list(unusable))))
        kept.bad_files = dataset.bad_files + [dataset.paths[index] for index in unusable]
        dataset = kept
    if on_bad_image == "skip":
        return without_unreadable(dataset, workers)
    if dataset.bad_files:
        raise UserError(f"{dataset.bad_files[0]} is not an image ({len(dataset.bad_files)} such file(s) among the "
                        "images); remove them or pass --on_bad_image skip")
    if dataset.paths is not None:
        undecodable = np.flatnonzero(~readable_images(dataset.paths, workers))
        if len(undecodable):
            raise UserError(f"{dataset.where(undecodable[0])} does not decode as an image ({len(undecodable)} such "
                            "file(s), python -m datasets.verify lists them); replace them, or pass --on_bad_image "
                            "skip to leave them out")
    return dataset
