"""Stanford Online Products, split by Ebay_train.txt and Ebay_test.txt (columns image_id class_id
super_class_id path, one header line), in either layout:
- re-packaged (Revisiting-DML's tar): <root>/images/<category>_final/*.JPG and <root>/Info_Files/;
- official (the Stanford zip): <root>/<category>_final/*.JPG with the Ebay_*.txt files beside them.
"""
import os

import numpy as np

from datasets.image_dataset import ImageDataset
from datasets.layout import find_layout, read_lines
from datasets.registry import register
from errors import UserError

COLUMNS = ["image_id", "class_id", "super_class_id", "path"]
LAYOUTS = {"repackaged": os.path.join("Info_Files", "Ebay_train.txt"), "official": "Ebay_train.txt"}
LAYOUT = ("images/<category>_final/<image> and Info_Files/Ebay_{train,test}.txt, or <category>_final/<image> "
          "with Ebay_{train,test}.txt beside them")


def read_info_file(path: str) -> dict[str, np.ndarray]:
    """{column: values} of an Ebay_*.txt file, with "line": each image's line number. The path is
    the rest of the line after the three numbers, so a path holding a space stays whole."""
    layout = f"a header line and the space-separated columns {' '.join(COLUMNS)}"
    expected = f"expected {layout}"
    lines = read_lines(path, layout)
    if not lines or lines[0][1].split() != COLUMNS:
        header = lines[0][1] if lines else "nothing"
        raise UserError(f"{path} has the columns {header}; {expected}")
    rows = []
    for number, line in lines[1:]:
        fields = line.split(maxsplit=len(COLUMNS) - 1)
        if len(fields) != len(COLUMNS) or not all(field.lstrip("-").isdigit() for field in fields[:3]):
            raise UserError(f"{path} line {number} is {line!r}; {expected}, the first three integers")
        rows.append((*map(int, fields[:3]), fields[3], number))
    if not rows:
        raise UserError(f"{path} lists no images; {expected}")
    columns = list(zip(*rows))
    return {name: np.array(values, dtype=object if name == "path" else np.int64)
            for name, values in zip([*COLUMNS, "line"], columns)}


def read_split(root: str, info_file: str, layout: str = "repackaged") -> ImageDataset:
    list_file = os.path.join(root, "Info_Files", info_file) if layout == "repackaged" else os.path.join(root, info_file)
    table = read_info_file(list_file)
    class_ids, labels = np.unique(table["class_id"], return_inverse=True)
    images = os.path.join(root, "images", "") if layout == "repackaged" else os.path.join(root, "")
    paths = [images + path for path in table["path"]]
    return ImageDataset(labels, [str(class_id) for class_id in class_ids], paths=paths,
                        super_labels=table["super_class_id"], listed_in=list_file, list_lines=table["line"])


@register("online_products", sample_split="first",
          metrics=("e_recall@1", "e_recall@10", "e_recall@100", "e_recall@1000", "nmi"),
          published={"train": (59551, 11318), "test": (60502, 11316)})
def load(source):
    root, layout = find_layout(source, "online_products", LAYOUTS, ("online_products", "Stanford_Online_Products"),
                               LAYOUT)
    return read_split(root, "Ebay_train.txt", layout), read_split(root, "Ebay_test.txt", layout)
