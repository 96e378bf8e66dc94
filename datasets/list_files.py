"""--dataset list: images named by list files, one `path label` a line (space separated), paths
relative to the list's folder or absolute, labels integers; as PaddlePaddle's metric-learning
suite writes them (e.g. CUB200_train.txt, CUB200_val.txt). --train_list and --test_list are
needed, --val_list optional. Labels name the classes across the lists: a list that shares labels
with the training list keeps the training list's class numbers (for --evaluation_protocol
train_gallery, which ranks it against the training images); one of other classes is numbered on
its own."""
import os

from datasets.layout import from_listed, read_lines
from datasets.registry import register
from errors import UserError

EXPECTED = "one 'path label' a line, the label an integer"
# The files the `list` dataset reads, by the name its loader takes them under.
LIST_INPUTS = {"train_list": "the training images, one 'path label' a line (paths relative to the list)",
               "test_list": "the test images",
               "val_list": "validation images (checkpoints are then selected on them)"}


def read_list(path, known=()):
    lines = read_lines(path, EXPECTED)
    paths, labels = [], []
    for number, line in lines:
        fields = line.rsplit(maxsplit=1)
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise UserError(f"{path} line {number} is {line!r}; expected {EXPECTED}")
        image = fields[0] if os.path.isabs(fields[0]) else os.path.join(os.path.dirname(os.path.abspath(path)),
                                                                        fields[0])
        paths.append(image)
        labels.append(int(fields[1]))
    return from_listed(paths, labels, path, [number for number, _ in lines], known)


@register("list", no_source="its list files name its images")
def load(source, train_list=None, test_list=None, val_list=None):
    """`source` is not used: the lists name their images."""
    if not train_list or not test_list:
        raise UserError("--dataset list needs --train_list FILE and --test_list FILE (and optionally --val_list)")
    splits = {"train": read_list(train_list)}
    known = [int(name) for name in splits["train"].class_names]
    if val_list:
        splits["val"] = read_list(val_list, known)
    splits["test"] = read_list(test_list, known)
    return splits
