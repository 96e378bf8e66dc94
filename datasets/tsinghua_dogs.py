"""Tsinghua Dogs, as its DML study uses it: <root>/train/<number>-<id>-<breed>/*.jpg and
<root>/val/ with the same 130 classes. A seen-class dataset: the val images are ranked against
the training images (the train_gallery protocol).

A class is its `<id>-<breed>` (e.g. n000001-Shiba_Dog): the leading number is left out of the
match between train/ and val/, and the classes are numbered in order of their id."""
import os
import re

import numpy as np

from datasets.image_dataset import ImageDataset
from datasets.layout import class_folders, find_layout, from_class_folders
from datasets.registry import register
from errors import UserError

EXPECTED = "train/<number>-<id>-<breed>/ and val/ of the same classes"


def class_key(folder):
    """`n000001-Shiba_Dog` for .../1043-n000001-Shiba_Dog; the whole name when it has no leading number."""
    name = os.path.basename(folder)
    match = re.fullmatch(r"\d+-(.+)", name)
    return match.group(1) if match else name


@register("tsinghua_dogs", default_protocol="train_gallery", published={"train": (None, 130), "test": (None, 130)})
def load(source):
    root, _ = find_layout(source, "tsinghua_dogs", {"folders": "train"}, ("tsinghua_dogs", "TsinghuaDogs"), EXPECTED)
    val_folder = os.path.join(root, "val")
    if not os.path.isdir(val_folder):
        raise UserError(f"missing {val_folder}; expected {EXPECTED}")
    train = from_class_folders(sorted(class_folders(os.path.join(root, "train")), key=class_key))
    val = from_class_folders(sorted(class_folders(val_folder), key=class_key))
    train.class_names = [class_key(name) for name in train.class_names]
    label_of = {key: label for label, key in enumerate(train.class_names)}
    unseen = [class_key(name) for name in val.class_names if class_key(name) not in label_of]
    if unseen:
        raise UserError(f"{val_folder} holds {len(unseen)} class folder(s) that train/ lacks (e.g. {unseen[0]}); "
                        f"expected {EXPECTED}")
    # the val images keep the training classes' numbers: they are ranked against the training images
    labels = np.array([label_of[class_key(name)] for name in val.class_names])[val.labels]
    test = ImageDataset(labels, train.class_names, paths=val.paths)
    test.bad_files = val.bad_files
    return train, test
