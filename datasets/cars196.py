"""CARS196 (Stanford Cars) in any of its three layouts, split as in DML: the classes 1-98 train,
99-196 test (by class index; the official train/test flag is not used).

- re-packaged (Revisiting-DML's tar): <root>/images/<class folder>/*.jpg, 196 folders, taken in
  sorted order, as the released code does;
- official: <root>/car_ims/NNNNNN.jpg with <root>/cars_annos.mat (struct array `annotations`:
  relative_im_path, bbox_x1..bbox_y2, class 1-196, test; `class_names`);
- devkit: <root>/cars_train/, <root>/cars_test/, <root>/devkit/cars_train_annos.mat and
  cars_test_annos_withlabels.mat (fname, class; in devkit/ or the root) and devkit/cars_meta.mat
  (class_names).

The re-packaged folders are named after the classes. Sorting the 196 names puts the same 98
classes first as the class index does (the boundary falls between "Eagle Talon Hatchback 1998"
and "FIAT 500 Abarth 2012"), so all layouts give the same split; within a split every layout
numbers the classes in sorted name order, the released code's, so one seed draws the same batches.
"""
import os

import numpy as np

from datasets.image_dataset import ImageDataset
from datasets.layout import class_folders, find_layout, split_class_folders
from datasets.registry import register
from errors import UserError

LAYOUTS = {"repackaged": "images", "official": "cars_annos.mat", "devkit": os.path.join("devkit", "cars_meta.mat")}
EXPECTED = ("images/<class folder>/, or car_ims/ and cars_annos.mat, or cars_train/, cars_test/ and "
            "devkit/cars_*.mat")
TRAIN_CLASSES = 98


def load_mat(path, what):
    if not os.path.isfile(path):
        raise UserError(f"missing {path}; expected {what} ({EXPECTED})")
    # imported here: scipy.io takes a while to import, which every --help would wait
    from scipy.io import loadmat

    try:
        return loadmat(path, squeeze_me=True)
    except Exception as error:  # noqa: BLE001  (a damaged file fails anywhere in scipy's parser: IndexError, KeyError...)
        raise UserError(f"cannot read {path} as a MATLAB file ({error}); expected {what}") from None


def read_mat(path, key, fields):
    """The records of the struct array `key` of a .mat file, each as a dict of `fields`."""
    content = load_mat(path, "the annotation file of CARS196")
    records = np.atleast_1d(content.get(key))
    names = records.dtype.names or ()
    if key not in content or not set(fields) <= set(names):
        found = ", ".join(names) or "none"
        raise UserError(f"{path} has no {key} with the fields {', '.join(fields)} (fields found: {found}); "
                        "expected CARS196's annotation file")
    return [{field: record[field] for field in fields} for record in records]


def class_names(path):
    names = load_mat(path, "CARS196's class names").get("class_names")
    if names is None:
        raise UserError(f"{path} has no class_names; expected CARS196's class names")
    return [str(name) for name in np.atleast_1d(names)]


def by_class_index(paths, classes, names, listed_in):
    """(train, test): the classes 1-98 and 99-196 by index; within a split the classes are numbered in
    sorted name order and the images sorted by file name, the order of the re-packaged tree."""
    classes = np.asarray(classes, dtype=np.int64)
    if classes.min() < 1 or classes.max() > len(names):
        raise UserError(f"{listed_in} holds class {classes.max()} for {len(names)} class names; "
                        f"expected 1-{len(names)}")
    n_train = min(TRAIN_CLASSES, (len(names) + 1) // 2)
    splits = []
    for indices in (range(1, n_train + 1), range(n_train + 1, len(names) + 1)):
        by_name = sorted(indices, key=lambda index: names[index - 1])
        label_of = {index: label for label, index in enumerate(by_name)}
        # by file name, then folder: the devkit's cars_train/ and cars_test/ both count from 00001.jpg
        kept = sorted((label_of[index], os.path.basename(path), path)
                      for path, index in zip(paths, classes.tolist()) if index in label_of)
        splits.append(ImageDataset(np.array([label for label, _, _ in kept], dtype=np.int64),
                                   [names[index - 1] for index in by_name], paths=[path for _, _, path in kept]))
    return tuple(splits)


@register("cars196", published={"train": (8054, 98), "test": (8131, 98)})
def load(source):
    root, layout = find_layout(source, "cars196", LAYOUTS, ("cars196", "stanford_cars", "CARS196"), EXPECTED)
    if layout == "repackaged":
        return split_class_folders(class_folders(os.path.join(root, "images")))
    if layout == "official":
        path = os.path.join(root, "cars_annos.mat")
        records = read_mat(path, "annotations", ("relative_im_path", "class"))
        return by_class_index([os.path.join(root, str(record["relative_im_path"])) for record in records],
                              [int(record["class"]) for record in records], class_names(path), path)
    devkit = os.path.join(root, "devkit")
    test_annotations = next((path for path in (os.path.join(devkit, "cars_test_annos_withlabels.mat"),
                                               os.path.join(root, "cars_test_annos_withlabels.mat"))
                             if os.path.isfile(path)), os.path.join(devkit, "cars_test_annos_withlabels.mat"))
    paths, classes = [], []
    for folder, annotations in (("cars_train", os.path.join(devkit, "cars_train_annos.mat")),
                                ("cars_test", test_annotations)):
        for record in read_mat(annotations, "annotations", ("fname", "class")):
            paths.append(os.path.join(root, folder, str(record["fname"])))
            classes.append(int(record["class"]))
    return by_class_index(paths, classes, class_names(os.path.join(devkit, "cars_meta.mat")), devkit)
