"""CUB-200-2011: <root>/images/001.Black_footed_Albatross/*.jpg ...; classes 1-100 train, 101-200 test."""
import os

from datasets.layout import load_class_tree
from datasets.registry import register
from errors import UserError

LAYOUT = "<root>/images/<number>.<name>/<image>"


def class_number(folder: str) -> int:
    prefix = os.path.basename(folder).split(".", 1)[0]
    if not prefix.isdigit():
        raise UserError(f"class folder {folder} does not start with a class number like "
                        f"001.Black_footed_Albatross; expected {LAYOUT}")
    return int(prefix)


@register("cub200", published={"train": (5864, 100), "test": (5924, 100)})
def load(source):
    return load_class_tree(source, "cub200", ("cub200", "CUB_200_2011"), class_number, LAYOUT)
