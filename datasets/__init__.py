"""Datasets by --dataset name: `select` returns the splits with their transforms attached."""
from dataclasses import replace

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
from datasets.image_dataset import ImageDataset, unusable_files, without_unreadable
from datasets.registry import LOADERS
from datasets.splits import split_train_val, without_last_classes
from datasets.transforms import (
    AUGMENTATIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
)
from errors import UserError

BAD_IMAGE_POLICIES = ("fail", "skip")


def names() -> list[str]:
    return LOADERS.names()


def default_protocol(name: str) -> str:
    """How the dataset's evaluation splits are ranked unless --evaluation_protocol says otherwise."""
    return LOADERS.get(name).default_protocol


def select(name: str, source: str | None, *, augmentation: str = "base", crop_size: int = 224,
           resize_size: int = 256, mean=IMAGENET_MEAN, std=IMAGENET_STD, use_tv_split: bool = False,
           tv_split_perc: float = 0.8, tv_split_by_samples: bool = False, on_bad_image: str = "fail",
           workers: int = 0, channel_order: str = "RGB", input_range: float = 1.0, interpolation: str = "bilinear",
           holdout_classes: int = 0, lists: dict | None = None) -> dict[str, ImageDataset]:
    """{"train", "val" (with use_tv_split), "test"} or, for a dataset evaluated query against
    gallery, {"train", "val", "query", "gallery"}: train with `augmentation`, the others with the
    evaluation resize + centre crop. `source` is the dataset folder or its parent.
    `lists` ({"train_list", "test_list", "val_list"}) names the list files of the `list` dataset.
    `holdout_classes` N leaves the last N classes out of "train" (after the validation split, which
    keeps them).

    on_bad_image "fail" stops at the first file of the dataset that is not a readable image
    (files that are not images at once, undecodable ones when read); "skip" decodes every image
    up front (in `workers` processes) and leaves the bad files out, listed in each split's
    `bad_files`."""
    loader = LOADERS.get(name)
    if augmentation not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation {augmentation!r}; choose one of {', '.join(AUGMENTATIONS)}")
    preprocessing = replace(Preprocessing(crop_size, resize_size, tuple(mean), tuple(std),
                                          channel_order=channel_order, input_range=input_range,
                                          interpolation=interpolation),
                            **loader.preprocessing)
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise UserError(f"unknown --on_bad_image {on_bad_image!r}; choose one of {', '.join(BAD_IMAGE_POLICIES)}")
    loaded = loader.load(source, **{key: value for key, value in (lists or {}).items() if value})
    parts = loaded if isinstance(loaded, dict) else dict(zip(("train", "test"), loaded))
    if use_tv_split and "val" in parts:
        raise UserError(f"{name} has its own validation split; drop --use_tv_split")
    parts = {split: _apply_bad_image_policy(dataset, on_bad_image, workers) for split, dataset in parts.items()}
    splits = {"train": parts.pop("train")}
    if "val" in parts:
        splits["val"] = parts.pop("val")
    if use_tv_split:
        splits["train"], splits["val"] = split_train_val(splits["train"], tv_split_perc, tv_split_by_samples,
                                                         loader.sample_split)
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
    return dataset
