"""CUB-200-2011's train/test split by class id (classes 1-100 train, 101-200 test), not by the
position of a folder among those present (issue 26: a missing folder moved a class into training)."""
import shutil

import pytest

import datasets
from errors import UserError
from tests.images import write_class_tree, write_cub_official

SMALL = {"crop_size": 32, "resize_size": 36}


def class_names(splits):
    return splits["train"].class_names, splits["test"].class_names


def test_the_split_follows_the_class_ids_of_classes_txt(tmp_path):
    root = write_cub_official(tmp_path, n_classes=6)
    train, test = class_names(datasets.select("cub200", str(root), **SMALL))
    assert train == ["001.Bird_1", "002.Bird_2", "003.Bird_3"] and test == ["004.Bird_4", "005.Bird_5", "006.Bird_6"]


def test_a_missing_class_folder_is_named_not_moved(tmp_path):
    root = write_cub_official(tmp_path, n_classes=6)
    shutil.rmtree(root / "CUB_200_2011" / "images" / "002.Bird_2")
    with pytest.raises(UserError) as error:
        datasets.select("cub200", str(root), **SMALL)
    message = str(error.value)
    assert "lacks 1 of the 6 class folders classes.txt lists: 002.Bird_2" in message
    assert "--dataset folder" in message and "\n" not in message


def test_without_classes_txt_the_folder_numbers_are_the_ids(tmp_path):
    names = ["001.A", "002.B", "004.D", "005.E", "006.F"]  # 003 missing
    write_class_tree(tmp_path / "cub200", names, images_per_class=1)
    with pytest.raises(UserError, match="lacks 1 of the 6 class folders numbered 1-6: 003"):
        datasets.select("cub200", str(tmp_path), **SMALL)
    write_class_tree(tmp_path / "complete", [*names, "003.C"], images_per_class=1)
    assert class_names(datasets.select("cub200", str(tmp_path / "complete"), **SMALL)) == \
        (["001.A", "002.B", "003.C"], ["004.D", "005.E", "006.F"])


def test_a_folder_classes_txt_does_not_list_is_an_error(tmp_path):
    root = write_cub_official(tmp_path, n_classes=4)
    shutil.copytree(root / "CUB_200_2011" / "images" / "004.Bird_4", root / "CUB_200_2011" / "images" / "009.Extra")
    with pytest.raises(UserError, match="classes.txt does not list: 009.Extra"):
        datasets.select("cub200", str(root), **SMALL)
