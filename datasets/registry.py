"""Dataset loaders by --dataset name, filled by the @register decorator in each loader file, with
each dataset's facts: the published counts of its splits, the metrics its papers report and how
its evaluation images are ranked."""
from dataclasses import dataclass, field
from typing import Callable

from registry import Registry

# The metrics each benchmark's papers report: Recall@1/2/4/8 and NMI on CUB and CARS (and, by
# default, on any other dataset).
RECALL_1_2_4_8_NMI = ("e_recall@1", "e_recall@2", "e_recall@4", "e_recall@8", "nmi")


@dataclass(frozen=True)
class Loader:
    # load(source) -> (train, test) ImageDatasets, or {"train", "query", "gallery"} for a dataset
    # evaluated query against gallery; without transforms
    load: Callable
    preprocessing: dict  # Preprocessing fields this dataset fixes, whatever the command line says
    sample_split: str  # how --tv_split_by_samples picks a class's training images (datasets/splits.py)
    default_protocol: str  # how its evaluation splits are ranked (evaluation/protocols.py)
    metrics: tuple[str, ...]  # the metrics its papers report: the default evaluation metrics
    splits: tuple[str, ...]  # the splits it comes with (the validation split, when it has one, aside)
    # {split: (images, classes)} as published, None where the publication gives no figure
    published: dict = field(default_factory=dict)
    # why the dataset reads no folder (the `source` of its settings), for one that does not
    no_source: str | None = None


LOADERS = Registry("dataset")


def register(name: str, sample_split: str = "spaced", default_protocol: str = "self",
             metrics: tuple[str, ...] = RECALL_1_2_4_8_NMI, splits: tuple[str, ...] = ("train", "test"),
             published: dict | None = None, no_source: str | None = None, **preprocessing):
    def add(load):
        LOADERS.register(name, Loader(load, preprocessing, sample_split, default_protocol, tuple(metrics),
                                      tuple(splits), published or {}, no_source))
        return load

    return add
