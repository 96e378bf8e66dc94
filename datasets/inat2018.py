"""iNaturalist 2018 with the DML split of Brown et al. (Smooth-AP, ECCV 2020): <root>/train_val2018/
<kingdom>/<species>/<image>.jpg and, beside it, Inaturalist_train_set1.txt and
Inaturalist_test_set1.txt, one image path (relative to <root>) a line. The class of an image is its
species folder; the train list holds 5,690 classes, the test list 2,452 others."""
import os

from datasets.layout import find_layout, from_listed, read_lines
from datasets.registry import register
from errors import UserError

LISTS = ("Inaturalist_train_set1.txt", "Inaturalist_test_set1.txt")
EXPECTED = "train_val2018/<kingdom>/<species>/<image>.jpg with Inaturalist_train_set1.txt and Inaturalist_test_set1.txt"


def read_split(root, name):
    path = os.path.join(root, name)
    lines = read_lines(path, "one image path a line, relative to the folder of the list, e.g. "
                             "train_val2018/Plantae/7477/<image>.jpg")
    for number, line in lines:
        if len(line.split("/")) < 3:
            raise UserError(f"{path} line {number} is {line!r}; expected train_val2018/<kingdom>/<species>/<image>")
    return from_listed([os.path.join(root, line) for _, line in lines], [os.path.dirname(line) for _, line in lines],
                       path, [number for number, _ in lines])


@register("inat2018", published={"train": (325846, 5690), "test": (136093, 2452)})
def load(source):
    root, _ = find_layout(source, "inat2018", {"smooth_ap": LISTS[0]}, ("inat2018", "iNaturalist", "inaturalist"),
                          EXPECTED)
    return tuple(read_split(root, name) for name in LISTS)
