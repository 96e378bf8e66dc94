"""Datasets by --dataset name: `select` returns the splits with their transforms attached."""
from dataclasses import replace

from datasets import cars196, cub200, digits, folder, online_products  # noqa: F401  (fill the registry)
from datasets.image_dataset import ImageDataset
from datasets.registry import LOADERS
from datasets.splits import split_train_val
from datasets.transforms import AUGMENTATIONS, IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from errors import UserError


def names() -> list[str]:
    return sorted(LOADERS)


def select(name: str, source: str | None, *, augmentation: str = "base", crop_size: int = 224,
           resize_size: int = 256, mean=IMAGENET_MEAN, std=IMAGENET_STD, use_tv_split: bool = False,
           tv_split_perc: float = 0.8, tv_split_by_samples: bool = False) -> dict[str, ImageDataset]:
    """{"train", "val" (with use_tv_split), "test"}: train with `augmentation`, the others with the
    evaluation resize + centre crop. `source` is the dataset folder or its parent."""
    if name not in LOADERS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(names())}")
    if augmentation not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation {augmentation!r}; choose one of {', '.join(AUGMENTATIONS)}")
    loader = LOADERS[name]
    preprocessing = replace(Preprocessing(crop_size, resize_size, tuple(mean), tuple(std)),
                            **loader.preprocessing)
    train, test = loader.load(source)
    splits = {"train": train}
    if use_tv_split:
        splits["train"], splits["val"] = split_train_val(train, tv_split_perc, tv_split_by_samples)
    splits["test"] = test
    training, evaluation = preprocessing.training(augmentation), preprocessing.evaluation(augmentation)
    return {split: dataset.with_transform(training if split == "train" else evaluation)
            for split, dataset in splits.items()}
