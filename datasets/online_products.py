"""Stanford Online Products, split by Ebay_train.txt and Ebay_test.txt (columns image_id class_id
super_class_id path, one header line), in either layout:
- re-packaged (Revisiting-DML's tar): <root>/images/<category>_final/*.JPG and <root>/Info_Files/;
- official (the Stanford zip): <root>/<category>_final/*.JPG with the Ebay_*.txt files beside them.
"""
import os

import numpy as np
import pandas as pd

from datasets.image_dataset import ImageDataset
from datasets.layout import find_layout
from datasets.registry import register
from errors import UserError

COLUMNS = ["image_id", "class_id", "super_class_id", "path"]
LAYOUTS = {"repackaged": os.path.join("Info_Files", "Ebay_train.txt"), "official": "Ebay_train.txt"}
LAYOUT = ("images/<category>_final/<image> and Info_Files/Ebay_{train,test}.txt, or <category>_final/<image> "
          "with Ebay_{train,test}.txt beside them")


def read_info_file(path: str) -> pd.DataFrame:
    expected = f"expected a header line and the space-separated columns {' '.join(COLUMNS)}"
    if not os.path.isfile(path):
        raise UserError(f"missing {path}; {expected}")
    try:
        table = pd.read_csv(path, sep=r"\s+", dtype={"path": str})
    except (ValueError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())  # pandas' messages span lines; the error is shown as one
        hint = "; a path holding a space splits into two columns" if "fields" in reason else ""
        raise UserError(f"cannot parse {path} ({reason}){hint}; {expected}") from None
    if list(table.columns) != COLUMNS or not pd.api.types.is_integer_dtype(table["class_id"]):
        raise UserError(f"{path} has the columns {' '.join(map(str, table.columns))}; {expected}")
    if table.empty:
        raise UserError(f"{path} lists no images; {expected}")
    return table


def read_split(root: str, info_file: str, layout: str = "repackaged") -> ImageDataset:
    list_file = os.path.join(root, "Info_Files", info_file) if layout == "repackaged" else os.path.join(root, info_file)
    table = read_info_file(list_file)
    class_ids, labels = np.unique(table["class_id"].to_numpy(), return_inverse=True)
    images = os.path.join(root, "images", "") if layout == "repackaged" else os.path.join(root, "")
    paths = (images + table["path"]).tolist()
    return ImageDataset(labels, [str(class_id) for class_id in class_ids], paths=paths,
                        super_labels=table["super_class_id"].to_numpy(), listed_in=list_file,
                        list_lines=table.index.to_numpy() + 2)  # after the header line


@register("online_products", sample_split="first",
          metrics=("e_recall@1", "e_recall@10", "e_recall@100", "e_recall@1000", "nmi"),
          published={"train": (59551, 11318), "test": (60502, 11316)})
def load(source):
    root, layout = find_layout(source, "online_products", LAYOUTS, ("online_products", "Stanford_Online_Products"),
                               LAYOUT)
    return read_split(root, "Ebay_train.txt", layout), read_split(root, "Ebay_test.txt", layout)
