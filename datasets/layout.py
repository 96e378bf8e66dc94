"""Finding a dataset's folder and reading <root>/images/<class>/<image> trees."""
import os

import numpy as np

from datasets.image_dataset import ImageDataset
from errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CLASS_LAYOUT = "<root>/images/<class>/<image>"


def find_root(source: str | None, dataset: str, folder_names: tuple[str, ...] = (),
              layout: str = CLASS_LAYOUT, marker: str = "images") -> str:
    """The dataset folder: `source` itself or `source/<one of folder_names>`, whichever holds `marker`."""
    if source is None:
        raise UserError(f"--dataset {dataset} needs --source, the dataset folder laid out as {layout}")
    source = os.path.expanduser(source)
    candidates = [source] + [os.path.join(source, name) for name in folder_names]
    for root in candidates:
        if os.path.exists(os.path.join(root, marker)):
            return root
    tried = ", ".join(os.path.join(root, marker) for root in candidates)
    kind = "file" if os.path.splitext(marker)[1] else "folder"  # Eval/list_eval_partition.txt is a file
    raise UserError(f"no {marker} {kind} for {dataset} (tried {tried}); point --source at a folder "
                    f"laid out as {layout}")


def _visible(entry: os.DirEntry) -> bool:
    # hidden entries are tool litter (.ipynb_checkpoints, macOS ._ resource forks), not data
    return not entry.name.startswith(".")


def class_folders(images_dir: str) -> list[str]:
    """The class folders in images_dir, sorted by name."""
    names = sorted(entry.name for entry in os.scandir(images_dir) if entry.is_dir() and _visible(entry))
    if not names:
        raise UserError(f"no class folders in {images_dir}; expected {CLASS_LAYOUT}")
    return [os.path.join(images_dir, name) for name in names]


def image_files(folder: str) -> tuple[list[str], list[str]]:
    """(image files, other files) of a class folder, sorted."""
    files = sorted(entry.path for entry in os.scandir(folder) if entry.is_file() and _visible(entry))
    images = [path for path in files if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS]
    if not images:
        raise UserError(f"class folder {folder} holds no images ({' '.join(IMAGE_EXTENSIONS)}); "
                        "add images or remove the folder")
    image_set = set(images)
    return images, [path for path in files if path not in image_set]


def from_class_folders(folders: list[str]) -> ImageDataset:
    """The images of the class folders; files that are not images are listed in `bad_files`."""
    images, others = zip(*(image_files(folder) for folder in folders))
    labels = np.repeat(np.arange(len(folders)), [len(class_images) for class_images in images])
    dataset = ImageDataset(labels, [os.path.basename(folder) for folder in folders],
                           paths=[path for class_images in images for path in class_images])
    dataset.bad_files = [path for class_others in others for path in class_others]
    return dataset


def load_class_tree(source: str | None, dataset: str, folder_names: tuple[str, ...] = (),
                    sort_key=None, layout: str = CLASS_LAYOUT) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) from the class folders under the dataset's images/, ordered by `sort_key`
    (default: name)."""
    root = find_root(source, dataset, folder_names, layout)
    return split_class_folders(sorted(class_folders(os.path.join(root, "images")), key=sort_key))


def split_class_folders(folders: list[str]) -> tuple[ImageDataset, ImageDataset]:
    """Train on the first half of the classes (rounded up), test on the rest."""
    if len(folders) < 2:
        raise UserError(f"{os.path.dirname(folders[0])} has only one class folder; a train/test split "
                        f"by classes needs at least 2 ({CLASS_LAYOUT})")
    n_train = (len(folders) + 1) // 2
    return from_class_folders(folders[:n_train]), from_class_folders(folders[n_train:])


def find_layout(source: str | None, dataset: str, layouts: dict[str, str], folder_names: tuple[str, ...] = (),
                expected: str = "") -> tuple[str, str]:
    """(root, layout name): the first of `source` and `source/<one of folder_names>` that holds
    the marker file or folder of one of `layouts` ({layout name: marker path}), tried in order."""
    if source is None:
        raise UserError(f"--dataset {dataset} needs --source, the dataset folder ({expected})")
    source = os.path.expanduser(source)
    candidates = [source] + [os.path.join(source, name) for name in folder_names]
    for root in candidates:
        for layout, marker in layouts.items():
            if os.path.exists(os.path.join(root, marker)):
                return root, layout
    tried = ", ".join(dict.fromkeys(os.path.join(root, marker) for root in candidates for marker in layouts.values()))
    raise UserError(f"no {dataset} layout under {source} (looked for {tried}); point --source at the folder "
                    f"that holds {expected}")


def from_listed(paths: list[str], classes: list, listed_in: str, lines: list[int], known=()) -> ImageDataset:
    """The listed images, their classes numbered in the order of `known` (the class values of a
    split they share classes with), then in sorted order of the other class values."""
    known = list(known)
    new = sorted(set(classes) - set(known))
    values = known + new if set(classes) & set(known) else new
    number = {value: label for label, value in enumerate(values)}
    labels = np.array([number[value] for value in classes], dtype=np.int64)
    return ImageDataset(labels, [str(value) for value in values], paths=paths, listed_in=listed_in, list_lines=lines)


def read_lines(path: str, expected: str) -> list[tuple[int, str]]:
    """(line number, stripped line) of the non-blank lines of a text file, or a UserError."""
    if not os.path.isfile(path):
        raise UserError(f"missing {path}; expected {expected}")
    try:
        with open(path) as handle:
            return [(number, line.strip()) for number, line in enumerate(handle, start=1) if line.strip()]
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file; expected {expected}") from None
