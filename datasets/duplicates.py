"""Duplicate images: a file listed twice, or two files of identical content (by hash), within a
split or across splits whose images meet in a ranking or in training: the training images and
each other split, the query and the gallery images. A copy that is ranked against its original
finds it at distance 0, so Recall@1 counts a hit that says nothing about the network (a test list
naming each image twice gave Recall@1 1.000, 0.855 without the copies); a test image that is
also a training image was learnt. The validation and test splits are not compared: they are
never ranked together.

A copy whose class is not its original's (by class name) is a conflict: the same image under two
classes, which no ranking can count right. "fail" names the conflicts apart; "warn" ranks them as
listed and counts them apart; "drop" leaves out the copy and, within a split, the original too
(neither class can be trusted; across splits the training and gallery images stay whole).

Only files whose size another file shares are read: their first HEAD bytes are hashed, and only
where those agree the whole file, in `workers` threads (hashlib and file reads release the GIL).
"""
import copy
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from errors import UserError

DUPLICATE_POLICIES = ("fail", "warn", "drop", "keep")
HEAD = 64 * 1024  # bytes hashed before a whole file is: distinct images differ within them
# The split whose copy is the original, first: the other copy is the one left out. The training
# images stay whole (a run trains on what it was given); the gallery stays whole, its queries
# are what is measured.
ORIGINALS_FIRST = ("train", "gallery", "val", "test", "query")
EXAMPLES = 3  # duplicates named in a message


@dataclass(frozen=True)
class Duplicate:
    split: str  # the split of the copy: the one left out with --duplicates drop
    index: int
    original_split: str
    original_index: int
    same_file: bool  # the same file listed twice (else two files of the same content)
    conflict: bool = False  # the copy's class is not the original's


def compared(splits) -> list[tuple[str, str]]:
    """(split of the originals, split of the copies) pairs compared across splits."""
    names = sorted(splits, key=_rank)
    pairs = [("train", name) for name in names if name != "train" and "train" in splits]
    if "query" in splits and "gallery" in splits:
        pairs.append(("gallery", "query"))
    return pairs


def _rank(split):
    return ORIGINALS_FIRST.index(split) if split in ORIGINALS_FIRST else len(ORIGINALS_FIRST)


def _digest(path, size=None):
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        if size is not None:
            digest.update(handle.read(size))
        else:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.digest()


def content_keys(paths, workers=0) -> dict[str, object]:
    """{path: key}, equal keys for files of equal content: a file whose size no other file has is
    its own key; the others are keyed by size and hashes, read in `workers` threads (at least 1)."""
    sizes = {}
    for path in paths:
        try:
            sizes[path] = os.stat(path).st_size
        except OSError:
            sizes[path] = None  # missing: the bad-image policy reports it
    by_size = {}
    for path, size in sizes.items():
        by_size.setdefault(size, []).append(path)
    keys = {path: path for path in paths}
    shared = [path for size, group in by_size.items() if size is not None and len(group) > 1 for path in group]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        heads = dict(zip(shared, pool.map(lambda path: _digest(path, HEAD), shared)))
        # files larger than HEAD whose heads agree with another's: the whole of them decides
        groups = {}
        for path in shared:
            groups.setdefault((sizes[path], heads[path]), []).append(path)
        whole = [path for (size, _), group in groups.items() if size > HEAD and len(group) > 1 for path in group]
        fulls = dict(zip(whole, pool.map(_digest, whole)))
    for path in shared:
        keys[path] = (sizes[path], heads[path], fulls.get(path))
    return keys


def find(splits, workers=0) -> list[Duplicate]:
    """The duplicates among `splits` ({name: ImageDataset}; those held in memory, without files,
    are not compared): within each split every later copy of an image, across the `compared`
    pairs each image of the second split that the first holds. An image is one duplicate at most."""
    with_files = {name: dataset for name, dataset in splits.items() if dataset.paths is not None}
    normal = {name: [os.path.normcase(os.path.abspath(path)) for path in dataset.paths]
              for name, dataset in with_files.items()}
    keys = content_keys(list(dict.fromkeys(path for paths in normal.values() for path in paths)), workers)
    found, firsts = {}, {}

    def duplicate(split, index, original_split, original):
        same_file = normal[original_split][original] == normal[split][index]
        return Duplicate(split, index, original_split, original, same_file,
                         class_name(splits[split], index) != class_name(splits[original_split], original))

    for name, paths in normal.items():
        first_of_path, first_of_key = {}, {}
        for index, path in enumerate(paths):
            key = keys[path]
            if key in first_of_key:
                found[name, index] = duplicate(name, index, name, first_of_path.get(path, first_of_key[key]))
            else:
                first_of_key[key] = index
            first_of_path.setdefault(path, index)
        firsts[name] = first_of_key
    for original_split, split in compared(with_files):
        originals = firsts[original_split]
        for index, path in enumerate(normal[split]):
            original = originals.get(keys[path])
            if original is not None and (split, index) not in found:
                found[split, index] = duplicate(split, index, original_split, original)
    return sorted(found.values(), key=lambda duplicate: (_rank(duplicate.split), duplicate.split, duplicate.index))


def class_name(dataset, index) -> str:
    return dataset.class_names[dataset.labels[index]]


def describe(duplicate: Duplicate, splits) -> str:
    copy = splits[duplicate.split]
    original = splits[duplicate.original_split]
    relation = "listed again" if duplicate.same_file else "the same content as"
    where = original.where(duplicate.original_index)
    if duplicate.same_file and duplicate.split == duplicate.original_split and original.list_lines is not None:
        where = f"line {original.list_lines[duplicate.original_index]}"
    classes = f" under class {class_name(copy, duplicate.index)}, not " \
              f"{class_name(original, duplicate.original_index)}" if duplicate.conflict else ""
    return (f"{duplicate.split} {copy.where(duplicate.index)} is {relation}"
            f"{' from' if duplicate.same_file else ''} {duplicate.original_split} {where}{classes}")


def apply_policy(splits, policy, workers=0):
    """`splits` under the duplicates policy: "warn" ranks them as listed and names each copy in its
    split's `duplicates` (note() words the warning), "fail" stops at duplicates (a UserError with
    their count and the first ones), "drop" leaves each copy out (named in its split's
    `duplicates`), "keep" ranks them as listed without looking for them. A conflict (a copy under
    another class) is also named in its split's `conflicts`; "drop" leaves out its original too
    when both are in one split."""
    if policy not in DUPLICATE_POLICIES:
        raise UserError(f"unknown --duplicates {policy!r}; choose one of {', '.join(DUPLICATE_POLICIES)}")
    if policy == "keep":
        return splits
    duplicates = find(splits, workers)
    if not duplicates:
        return splits
    conflicts = [duplicate for duplicate in duplicates if duplicate.conflict]
    if policy == "fail":
        counts = {}
        for duplicate in duplicates:
            counts[duplicate.split] = counts.get(duplicate.split, 0) + 1
        first = "; ".join(describe(duplicate, splits) for duplicate in duplicates[:EXAMPLES])
        conflicting = f", {_conflicts_of(len(conflicts))} (first: {describe(conflicts[0], splits)})" if conflicts \
            else ""
        raise UserError(f"{len(duplicates)} duplicate image(s) ({', '.join(f'{n} in {s}' for s, n in counts.items())}"
                        f"; first: {first}){conflicting}: a copy ranked against its original, or a test image also "
                        "trained on, inflates the recall; remove the copies"
                        f"{' and give each image one class' if conflicts else ''}, or pass --duplicates drop to leave "
                        "them out (--duplicates warn or keep ranks them as listed)")
    kept = dict(splits)
    for name in splits:
        copies = [duplicate for duplicate in duplicates if duplicate.split == name]
        if not copies:
            continue
        dataset = splits[name]
        if policy == "drop":
            left_out = np.zeros(len(dataset), dtype=bool)
            left_out[[duplicate.index for duplicate in copies]] = True
            # neither class of a conflict within the split can be trusted
            left_out[[duplicate.original_index for duplicate in copies
                      if duplicate.conflict and duplicate.original_split == name]] = True
            kept[name] = dataset.subset(np.flatnonzero(~left_out))
        else:  # warn: the released code's rankings, copies included, said out loud
            kept[name] = copy.copy(dataset)
        kept[name].duplicates = dataset.duplicates + [describe(duplicate, splits) for duplicate in copies]
        kept[name].conflicts = dataset.conflicts + [describe(duplicate, splits) for duplicate in copies
                                                    if duplicate.conflict]
    return kept


def _conflicts_of(count):
    return f"{count} of them {'a conflict' if count == 1 else 'conflicts'}, the same image under two classes"


def _found(splits, kind):
    """The descriptions of `kind` ("duplicates", "conflicts") over the splits, each once: a split
    cut out of another shares its lists."""
    return list(dict.fromkeys(found for dataset in splits.values() for found in getattr(dataset, kind)))


def note(splits, policy) -> str | None:
    """The line that says what became of the duplicates `apply_policy` found, None without any."""
    copies, conflicts = _found(splits, "duplicates"), _found(splits, "conflicts")
    if not copies:
        return None
    conflicting = f"; {_conflicts_of(len(conflicts))} (first: {conflicts[0]})" if conflicts else ""
    if policy == "drop":
        return (f"left out {len(copies)} duplicate image(s) (--duplicates drop; first: {copies[0]}){conflicting}"
                + (", each left out with its original where that is in the same split" if conflicts else ""))
    return (f"warning: kept {len(copies)} duplicate image(s), ranked as listed as the released code does "
            f"(first: {copies[0]}){conflicting}{', each ranked under both classes' if conflicts else ''}; a copy "
            "ranked against its original, or a test image also trained on, inflates the recall: --duplicates drop "
            "leaves them out, --duplicates fail stops the run")


def summary(splits, policy) -> dict:
    """What a run's summary.json and an evaluation's JSON record of the duplicates: the policy, the
    copies and, of those, the conflicts (None under "keep", which does not look for them)."""
    looked = policy != "keep"
    return {"policy": policy, "copies": len(_found(splits, "duplicates")) if looked else None,
            "conflicts": len(_found(splits, "conflicts")) if looked else None}
