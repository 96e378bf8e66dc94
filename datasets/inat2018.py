"""iNaturalist 2018 with the DML split of Brown et al. (Smooth-AP, ECCV 2020): <root>/train_val2018/
<kingdom>/<species>/<image>.jpg and the split files Inaturalist_train_set1.txt and
Inaturalist_test_set1.txt, one image path (relative to <root>) a line, either beside train_val2018/
or in <root>/Inat_dataset_splits/ (where Smooth-AP's code and pytorch-metric-learning's
INaturalist2018 read them). The class of an image is its species folder; the train list holds
5,690 classes, the test list 2,452 others."""
import os

from datasets.layout import find_layout, from_listed, read_lines
from datasets.registry import register
from errors import UserError

LISTS = ("Inaturalist_train_set1.txt", "Inaturalist_test_set1.txt")
SPLITS_FOLDER = "Inat_dataset_splits"
LAYOUTS = {"beside": LISTS[0], "splits_folder": os.path.join(SPLITS_FOLDER, LISTS[0])}
EXPECTED = (f"train_val2018/<kingdom>/<species>/<image>.jpg with Inaturalist_train_set1.txt and "
            f"Inaturalist_test_set1.txt beside it or in {SPLITS_FOLDER}/")


def read_split(root, name, lists_folder=None):
    """The images listed in `name` (in `lists_folder`, default `root`), their paths relative to `root`."""
    path = os.path.join(lists_folder or root, name)
    lines = read_lines(path, "one image path a line, relative to the folder holding train_val2018/, e.g. "
                             "train_val2018/Plantae/7477/<image>.jpg")
    for number, line in lines:
        if len(line.split("/")) < 3:
            raise UserError(f"{path} line {number} is {line!r}; expected train_val2018/<kingdom>/<species>/<image>")
    return from_listed([os.path.join(root, line) for _, line in lines], [os.path.dirname(line) for _, line in lines],
                       path, [number for number, _ in lines])


@register("inat2018", published={"train": (325846, 5690), "test": (136093, 2452)})
def load(source):
    root, layout = find_layout(source, "inat2018", LAYOUTS, ("inat2018", "iNaturalist", "inaturalist"), EXPECTED)
    lists_folder = os.path.join(root, SPLITS_FOLDER) if layout == "splits_folder" else root
    return tuple(read_split(root, name, lists_folder) for name in LISTS)
