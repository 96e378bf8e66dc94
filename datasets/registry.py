"""Dataset loaders by --dataset name, filled by the @register decorator in each loader file."""
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Loader:
    load: Callable  # load(source) -> (train ImageDataset, test ImageDataset), without transforms
    preprocessing: dict  # Preprocessing fields this dataset fixes, whatever the command line says


LOADERS: dict[str, Loader] = {}


def register(name: str, **preprocessing):
    def add(load):
        LOADERS[name] = Loader(load, preprocessing)
        return load

    return add
