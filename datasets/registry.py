"""Dataset loaders by --dataset name, filled by the @register decorator in each loader file."""
from dataclasses import dataclass
from typing import Callable

from registry import Registry


@dataclass(frozen=True)
class Loader:
    # load(source) -> (train, test) ImageDatasets, or {"train", "query", "gallery"} for a dataset
    # evaluated query against gallery; without transforms
    load: Callable
    preprocessing: dict  # Preprocessing fields this dataset fixes, whatever the command line says
    sample_split: str  # how --tv_split_by_samples picks a class's training images (datasets/splits.py)
    default_protocol: str  # how its evaluation splits are ranked (evaluation/protocols.py)


LOADERS = Registry("dataset")


def register(name: str, sample_split: str = "spaced", default_protocol: str = "self", **preprocessing):
    def add(load):
        LOADERS.register(name, Loader(load, preprocessing, sample_split, default_protocol))
        return load

    return add
