"""Which set each evaluation split is ranked against: the evaluation protocols.

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

PROTOCOLS = ("self", "query_gallery", "train_gallery")


@dataclass(frozen=True)
class Ranking:
    row: str  # the split its metrics.csv row names
    query: str  # the split whose images query
    gallery: str | None  # the split they are ranked against; None: themselves
    protocol: str  # the protocol that made the row


def rankings(splits, protocol):
    """The Rankings of the evaluation splits of `splits` ({name: ImageDataset}, "train" among them)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    evaluated = [split for split in splits if split not in ("train", "query", "gallery")]
    if protocol == "query_gallery":
        if "query" not in splits or "gallery" not in splits:
            raise ValueError("the query_gallery protocol needs a dataset with query and gallery images (inshop)")
        return [Ranking(split, split, None, "self") for split in evaluated] + \
            [Ranking("test", "query", "gallery", "query_gallery")]
    evaluated += [split for split in ("query", "gallery") if split in splits]
    if protocol == "self":
        return [Ranking(split, split, None, "self") for split in evaluated]
    seen = set(splits["train"].class_names)
    return [Ranking(split, split, "train", "train_gallery") if seen & set(splits[split].class_names)
            else Ranking(split, split, None, "self") for split in evaluated]
