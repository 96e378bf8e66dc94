"""DeepFashion In-Shop Clothes Retrieval: <root>/img/... and <root>/Eval/list_eval_partition.txt.

The list file holds the number of images on its first line, the header `image_name item_id
evaluation_status` on its second, then one image a line. Training uses the `train` images
(3,997 items); evaluation ranks the `query` images (14,218) against the `gallery` images
(12,612) of the other 3,985 items, with Recall@1, 10, 20, 30, 40, the list the papers report.
"""
import os

import numpy as np

from datasets.image_dataset import ImageDataset
from datasets.layout import find_root
from datasets.registry import register
from errors import UserError

LIST_FILE = os.path.join("Eval", "list_eval_partition.txt")
LAYOUT = "<root>/img/... and <root>/Eval/list_eval_partition.txt (count line, header line, then " \
         "'image_name item_id evaluation_status')"
STATUSES = ("train", "query", "gallery")


def read_partition(path):
    """[(image name, item id, status, line number)] of the list file at `path`."""
    with open(path) as handle:
        lines = handle.read().splitlines()
    header = lines[1].split() if len(lines) > 1 else []
    if header != ["image_name", "item_id", "evaluation_status"]:
        raise UserError(f"{path} line 2 is {' '.join(header) or 'missing'}; expected the header "
                        "'image_name item_id evaluation_status' after the count line")
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or fields[2] not in STATUSES:
            raise UserError(f"{path} line {number} is {line.strip()!r}; expected 'image_name item_id status', "
                            f"status one of {', '.join(STATUSES)} (a path holding a space breaks the columns)")
        rows.append((*fields, number))
    return rows


@register("inshop", default_protocol="query_gallery", splits=("train", "query", "gallery"),
          metrics=("e_recall@1", "e_recall@10", "e_recall@20", "e_recall@30", "e_recall@40", "mAP@R"),
          published={"train": (25882, 3997), "query": (14218, 3985), "gallery": (12612, 3985)})
def load(source):
    root = find_root(source, "inshop", ("inshop", "InShop", "In-shop", "In-Shop"), LAYOUT, marker=LIST_FILE)
    path = os.path.join(root, LIST_FILE)
    rows = read_partition(path)
    splits = {}
    evaluated_items = sorted({item for _, item, status, _ in rows if status != "train"})
    for status in STATUSES:
        members = [row for row in rows if row[2] == status]
        if not members:
            raise UserError(f"{path} lists no {status} image; the In-Shop protocol needs train, query and gallery "
                            "images")
        # query and gallery name their classes alike, so that a query's item is found in the gallery
        items = sorted({item for _, item, _, _ in members}) if status == "train" else evaluated_items
        labels = np.searchsorted(items, [item for _, item, _, _ in members])
        splits[status] = ImageDataset(labels, items, paths=[os.path.join(root, name) for name, _, _, _ in members],
                                      listed_in=path, list_lines=[number for _, _, _, number in members])
    return splits
