"""Which set each evaluation split is ranked against: the evaluation protocols, by name (PROTOCOLS).

- self: each evaluation split (val, test) against itself, each image left out of its own
  ranking; the released protocol of CUB200, CARS196 and SOP.
- query_gallery: the query images against the gallery images, reported as the test row (In-Shop
  Clothes Retrieval); a validation split against itself.
- train_gallery: each evaluation split that shares classes with the training split queries the
  training images, the seen-class protocol (with --use_tv_split --tv_split_by_samples, or a
  dataset whose train and test share classes); a split that shares no class is ranked against
  itself.
"""
from dataclasses import dataclass
from typing import Callable

from registry import Registry

PROTOCOLS = Registry("evaluation protocol", order=None)


@dataclass(frozen=True)
class Ranking:
    row: str  # the split its metrics.csv row names
    query: str  # the split whose images query
    gallery: str | None  # the split they are ranked against; None: themselves
    protocol: str  # the protocol that made the row


@dataclass(frozen=True)
class Protocol:
    rankings: Callable  # rankings(splits) -> [Ranking], splits {name: ImageDataset} with "train" among them
    needs: tuple[str, ...] = ()  # the splits a dataset must have for it


def register(name, needs=()):
    def add(rankings):
        PROTOCOLS.register(name, Protocol(rankings, tuple(needs)))
        return rankings

    return add


def _evaluated(splits):
    return [split for split in splits if split not in ("train", "query", "gallery")]


# self and train_gallery need a test split: their test row ranks it. A dataset whose test images
# are a query/gallery pair (inshop) would get no test row from them, and no checkpoint selected.
@register("self", needs=("test",))
def _each_against_itself(splits):
    evaluated = _evaluated(splits) + [split for split in ("query", "gallery") if split in splits]
    return [Ranking(split, split, None, "self") for split in evaluated]


@register("query_gallery", needs=("query", "gallery"))
def _query_against_gallery(splits):
    if "query" not in splits or "gallery" not in splits:
        raise ValueError("the query_gallery protocol needs a dataset with query and gallery images (inshop)")
    return [Ranking(split, split, None, "self") for split in _evaluated(splits)] + \
        [Ranking("test", "query", "gallery", "query_gallery")]


@register("train_gallery", needs=("test",))
def _against_the_training_images(splits):
    seen = set(splits["train"].class_names)
    evaluated = _evaluated(splits) + [split for split in ("query", "gallery") if split in splits]
    return [Ranking(split, split, "train", "train_gallery") if seen & set(splits[split].class_names)
            else Ranking(split, split, None, "self") for split in evaluated]


def unsuited(protocol, dataset, splits, datasets):
    """Why `protocol` cannot rank dataset `dataset` (its published `splits`), or None; `datasets`
    ({name: its splits}) names those it suits. The message names the settings evaluation_protocol
    and dataset."""
    missing = [split for split in PROTOCOLS.get(protocol).needs if split not in splits]
    if not missing:
        return None
    having = [name for name, their_splits in datasets.items() if set(missing) <= set(their_splits)]
    suited = [name for name, entry in PROTOCOLS.items() if set(entry.needs) <= set(splits)]
    return (f"evaluation_protocol {protocol} needs {' and '.join(missing)} images"
            + (f" (dataset {' or '.join(having)})" if 0 < len(having) <= 3 else "")
            + f", not dataset {dataset} (its splits: {', '.join(splits)})"
            + (f"; use evaluation_protocol {' or '.join(suited)}" if suited else ""))


def rankings(splits, protocol):
    """The Rankings of the evaluation splits of `splits` ({name: ImageDataset}, "train" among them)."""
    return PROTOCOLS.get(protocol).rankings(splits)
