"""Dataset loaders by --dataset name, filled by the @register decorator in each loader file."""
from dataclasses import dataclass
from typing import Callable

from registry import Registry


@dataclass(frozen=True)
class Loader:
    load: Callable  # load(source) -> (train ImageDataset, test ImageDataset), without transforms
    preprocessing: dict  # Preprocessing fields this dataset fixes, whatever the command line says
    sample_split: str  # how --tv_split_by_samples picks a class's training images (datasets/splits.py)


LOADERS = Registry("dataset")


def register(name: str, sample_split: str = "spaced", **preprocessing):
    def add(load):
        LOADERS.register(name, Loader(load, preprocessing, sample_split))
        return load

    return add
