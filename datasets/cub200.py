"""CUB-200-2011: <root>/images/001.Black_footed_Albatross/*.jpg ...; classes 1-100 train, 101-200 test.

The split is by class id, the number that starts each folder name: the ids classes.txt lists when
it lies beside images/ (the official archive), else the smallest to the largest folder number
(the re-packaged copy: there a missing first or last class goes unseen, as `datasets.verify`'s
published counts show). The first half of the ids train. A class folder missing among them is an
error: splitting the folders present by position would move a test class into training.
"""
import os

from datasets.layout import class_folders, find_root, from_class_folders, read_lines
from datasets.registry import register
from errors import UserError

LAYOUT = "<root>/images/<number>.<name>/<image>"
CLASSES_FILE = "classes.txt"


def class_number(folder: str) -> int:
    prefix = os.path.basename(folder).split(".", 1)[0]
    if not prefix.isdigit():
        raise UserError(f"class folder {folder} does not start with a class number like "
                        f"001.Black_footed_Albatross; expected {LAYOUT}")
    return int(prefix)


def listed_classes(path: str) -> dict[int, str]:
    """{class id: folder name} of classes.txt: one 'id name' a line."""
    expected = "one 'class_id folder_name' a line, as CUB_200_2011/classes.txt"
    listed = {}
    for number, line in read_lines(path, expected):
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not fields[0].isdigit() or int(fields[0]) in listed:
            raise UserError(f"{path} line {number} is {line!r}; expected {expected}, each id once")
        listed[int(fields[0])] = fields[1]
    return listed


@register("cub200", published={"train": (5864, 100), "test": (5924, 100)})
def load(source):
    root = find_root(source, "cub200", ("cub200", "CUB_200_2011"), LAYOUT)
    images = os.path.join(root, "images")
    by_id = {}
    for folder in class_folders(images):
        number = class_number(folder)
        if number in by_id:
            raise UserError(f"class folders {by_id[number]} and {folder} have the same class number {number}; "
                            "keep one of them")
        by_id[number] = folder
    classes_file = os.path.join(root, CLASSES_FILE)
    if os.path.isfile(classes_file):
        listed = listed_classes(classes_file)
        unlisted = [os.path.basename(by_id[number]) for number in sorted(set(by_id) - set(listed))]
        if unlisted:
            raise UserError(f"{images} holds class folders that {classes_file} does not list: "
                            f"{', '.join(unlisted[:5])}; remove them or list them there")
        described = f"the {len(listed)} class folders {CLASSES_FILE} lists"
    else:
        listed = {number: f"{number:03d}" for number in range(min(by_id), max(by_id) + 1)}
        described = f"the {len(listed)} class folders numbered {min(by_id)}-{max(by_id)}"
    missing = [name for number, name in sorted(listed.items()) if number not in by_id]
    if missing:
        raise UserError(f"{images} lacks {len(missing)} of {described}: {', '.join(missing[:5])}"
                        f"{' ...' if len(missing) > 5 else ''}; restore them (extract the archive again), or train "
                        "on the folders present, split by position, with --dataset folder")
    ids = sorted(listed)
    if len(ids) < 2:
        raise UserError(f"{images} has only one class folder; a train/test split by classes needs at least 2 "
                        f"({LAYOUT})")
    n_train = (len(ids) + 1) // 2
    return (from_class_folders([by_id[number] for number in ids[:n_train]]),
            from_class_folders([by_id[number] for number in ids[n_train:]]))
