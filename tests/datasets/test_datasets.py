"""datasets/: tiny generated trees in each real layout, the splits, transforms and user errors."""
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

import datasets
from datasets.image_dataset import ImageDataset, load_rgb
from datasets.splits import class_folds, split_train_val
from errors import SettingError, UserError
from tests.images import write_class_tree, write_image

SMALL = {"crop_size": 32, "resize_size": 36}


@pytest.fixture
def cub_parent(tmp_path):
    """A CUB tree under its usual folder name, with odd image modes and a non-image file in class 1."""
    root = write_class_tree(tmp_path / "CUB_200_2011", ["001.Black_footed_Albatross", "002.Laysan_Albatross",
                                                        "003.Sooty_Albatross", "004.Groove_billed_Ani"])
    first_class = root / "images" / "001.Black_footed_Albatross"
    write_image(first_class / "gray.jpg", "L")
    write_image(first_class / "palette.png", "P")
    write_image(first_class / "cmyk.JPG", "CMYK")
    (first_class / "notes.txt").write_text("not an image")
    return tmp_path


def write_sop_tree(root, train_header="image_id class_id super_class_id path"):
    rows = {"Ebay_train.txt": [(1, 11, 1, "bicycle_final/11_0.JPG"), (2, 11, 1, "bicycle_final/11_1.JPG"),
                               (3, 15, 1, "bicycle_final/15_0.JPG"), (4, 40, 2, "chair_final/40_0.JPG")],
            "Ebay_test.txt": [(5, 70, 2, "chair_final/70_0.JPG"), (6, 90, 2, "chair_final/90_0.JPG")]}
    (root / "Info_Files").mkdir(parents=True)
    for file_name, file_rows in rows.items():
        header = train_header if file_name == "Ebay_train.txt" else "image_id class_id super_class_id path"
        lines = [header] + [" ".join(map(str, row)) for row in file_rows]
        (root / "Info_Files" / file_name).write_text("\n".join(lines) + "\n")
        for row in file_rows:
            write_image(root / "images" / row[3], seed=row[0])
    return root


def assert_contiguous(dataset):
    assert dataset.labels.dtype == np.int64
    assert set(dataset.labels.tolist()) == set(range(dataset.n_classes))


def test_names():
    assert datasets.names() == ["cars196", "cub200", "digits", "folder", "inat2018", "inshop", "list",
                                "online_products", "tsinghua_dogs"]
    assert datasets.AUGMENTATIONS == ("base", "adv", "big", "red")


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(UserError, match="unknown dataset 'cub'.*cars196, cub200, digits, folder, inat2018, inshop, "
                                        "list, online_products"):
        datasets.select("cub", "/nowhere")


@pytest.mark.filterwarnings("error")
def test_cub_from_parent_folder_splits_classes_and_reads_every_mode(cub_parent):
    splits = datasets.select("cub200", str(cub_parent), on_bad_image="skip")
    assert list(splits) == ["train", "test"]
    assert [os.path.basename(path) for path in splits["train"].bad_files] == ["notes.txt"]
    train, test = splits["train"], splits["test"]
    assert train.class_names == ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    assert test.class_names == ["003.Sooty_Albatross", "004.Groove_billed_Ani"]
    assert (len(train), len(test)) == (9, 6)  # 3 odd-mode images join class 1; notes.txt does not
    assert train.labels.tolist() == [0] * 6 + [1] * 3
    assert_contiguous(train)
    assert_contiguous(test)
    for dataset in (train, test):
        for index in range(len(dataset)):
            image, label = dataset[index]
            assert image.shape == (3, 224, 224) and image.dtype == torch.float32
            assert label == dataset.labels[index] and isinstance(label, int)


def test_cub_orders_classes_by_number(tmp_path):
    write_class_tree(tmp_path, ["10.j", "9.i", "11.k", "12.l"], images_per_class=1)
    splits = datasets.select("cub200", str(tmp_path), **SMALL)
    assert splits["train"].class_names == ["9.i", "10.j"]
    assert splits["test"].class_names == ["11.k", "12.l"]


def test_cub_rejects_unnumbered_class_folder(tmp_path):
    write_class_tree(tmp_path, ["001.a", "birds"], images_per_class=1)
    with pytest.raises(UserError, match="birds does not start with a class number"):
        datasets.select("cub200", str(tmp_path))


def test_cars_and_folder_sort_by_name(tmp_path):
    write_class_tree(tmp_path / "cars196", ["Volvo", "Audi", "BMW", "Tesla"], images_per_class=2)
    cars = datasets.select("cars196", str(tmp_path), **SMALL)  # the parent folder
    assert cars["train"].class_names == ["Audi", "BMW"] and cars["test"].class_names == ["Tesla", "Volvo"]
    generic = datasets.select("folder", str(tmp_path / "cars196"), **SMALL)  # the dataset folder itself
    assert generic["test"].paths == cars["test"].paths
    assert generic["train"][0][0].shape == (3, 32, 32)


def test_folder_needs_two_classes(tmp_path):
    write_class_tree(tmp_path, ["only"])
    with pytest.raises(UserError, match="only one class folder"):
        datasets.select("folder", str(tmp_path))


def test_online_products_relabels_each_split(tmp_path):
    write_sop_tree(tmp_path / "Stanford_Online_Products")
    splits = datasets.select("online_products", str(tmp_path), **SMALL)
    train, test = splits["train"], splits["test"]
    assert train.labels.tolist() == [0, 0, 1, 2] and train.class_names == ["11", "15", "40"]
    assert test.labels.tolist() == [0, 1] and test.class_names == ["70", "90"]
    assert train.paths[3] == str(tmp_path / "Stanford_Online_Products" / "images" / "chair_final" / "40_0.JPG")
    assert test[1][0].shape == (3, 32, 32)


def test_online_products_wrong_columns(tmp_path):
    write_sop_tree(tmp_path, train_header="image_id class path extra")
    with pytest.raises(UserError, match=r"Ebay_train.txt has the columns image_id class path extra; "
                                        r"expected .*image_id class_id super_class_id path"):
        datasets.select("online_products", str(tmp_path))


@pytest.mark.parametrize("spaced", ["bicycle_final/15_0.JPG", "bicycle_final/11_0.JPG"])
def test_online_products_path_holding_a_space_is_read_whole(tmp_path, spaced):
    # the first data line too: pandas took a fifth field there for an index column (a ValueError later)
    write_sop_tree(tmp_path)
    info = tmp_path / "Info_Files" / "Ebay_train.txt"
    renamed = spaced.replace("_final", " final")
    info.write_text(info.read_text().replace(spaced, renamed))
    write_image(tmp_path / "images" / renamed)
    train = datasets.select("online_products", str(tmp_path), **SMALL)["train"]
    assert str(tmp_path / "images" / renamed) in train.paths
    assert train.class_names == ["11", "15", "40"] and train.super_labels.tolist() == [1, 1, 1, 2]


def test_online_products_line_without_three_numbers_is_named(tmp_path):
    write_sop_tree(tmp_path)
    info = tmp_path / "Info_Files" / "Ebay_train.txt"
    info.write_text(info.read_text().replace("3 15 1 ", "3 x 1 "))
    with pytest.raises(UserError, match=re.escape(f"{info} line 4 is '3 x 1 bicycle_final/15_0.JPG'; expected")):
        datasets.select("online_products", str(tmp_path))


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_listed_files_missing_or_empty_are_named_with_their_line_before_training(tmp_path, problem):
    write_sop_tree(tmp_path)
    image = tmp_path / "images" / "bicycle_final" / "15_0.JPG"
    if problem == "missing":
        image.unlink()
    else:
        image.write_bytes(b"")
    info = tmp_path / "Info_Files" / "Ebay_train.txt"
    with pytest.raises(UserError, match=re.escape(f"1 image file(s) missing or empty: {image} ({info} line 4) is "
                                                  f"{problem}; restore them or pass --on_bad_image skip")):
        datasets.select("online_products", str(tmp_path), **SMALL)
    splits = datasets.select("online_products", str(tmp_path), on_bad_image="skip", **SMALL)
    assert len(splits["train"]) == 3 and splits["train"].bad_files == [str(image)]
    assert splits["train"].class_names == ["11", "40"]  # a class that lost all its images is gone


def test_empty_image_in_a_class_folder_is_found_at_start(cub_parent):
    empty = cub_parent / "CUB_200_2011" / "images" / "002.Laysan_Albatross" / "img_0.jpg"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match=re.escape(f"{empty} is empty")):
        datasets.select("cub200", str(cub_parent), **SMALL)


def test_online_products_missing_info_file(tmp_path):
    write_sop_tree(tmp_path)
    (tmp_path / "Info_Files" / "Ebay_test.txt").unlink()
    with pytest.raises(UserError, match="missing .*Ebay_test.txt.*image_id class_id super_class_id path"):
        datasets.select("online_products", str(tmp_path))


def test_val_split_by_classes(tmp_path):
    write_class_tree(tmp_path, [f"class_{index}" for index in range(10)], images_per_class=2)
    splits = datasets.select("folder", str(tmp_path), use_tv_split=True, tv_split_perc=0.6, **SMALL)
    assert list(splits) == ["train", "val", "test"]
    train, val = splits["train"], splits["val"]
    assert train.class_names == ["class_0", "class_1", "class_2"]
    assert val.class_names == ["class_3", "class_4"]
    assert_contiguous(train)
    assert_contiguous(val)
    assert any(isinstance(step, T.CenterCrop) for step in val.transform.transforms)
    assert any(isinstance(step, T.RandomResizedCrop) for step in train.transform.transforms)


def test_val_split_by_samples_keeps_labels(tmp_path):
    write_class_tree(tmp_path, [f"class_{index}" for index in range(6)], images_per_class=3)
    splits = datasets.select("folder", str(tmp_path), use_tv_split=True, tv_split_perc=0.7,
                             tv_split_by_samples=True, **SMALL)
    train, val = splits["train"], splits["val"]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]  # int(0.7 * 3) = 2 of 3 images stay in training
    assert val.labels.tolist() == [0, 1, 2]
    assert val.class_names == train.class_names == ["class_0", "class_1", "class_2"]
    assert val.paths[1].endswith("class_1/img_1.jpg")  # positions round(linspace(0, 2, 2)) = 0, 2 train
    assert not set(train.paths) & set(val.paths)


@pytest.mark.parametrize("n_classes,folds", [(10, 4), (5, 2), (7, 7)])
def test_class_folds_are_disjoint_and_cover_the_training_classes(n_classes, folds):
    train = in_memory(np.repeat(np.arange(n_classes), 3))
    validated = []
    for fold in range(folds):
        fold_train, fold_val = class_folds(train, folds, fold)
        assert not set(fold_train.class_names) & set(fold_val.class_names)  # class-disjoint
        assert sorted(fold_train.class_names + fold_val.class_names) == sorted(train.class_names)
        assert len(fold_val) == 3 * fold_val.n_classes and assert_contiguous(fold_val) is None
        validated += fold_val.class_names
    # every class validates exactly once, the folds as even as the classes allow
    assert sorted(validated) == sorted(train.class_names)
    sizes = [class_folds(train, folds, fold)[1].n_classes for fold in range(folds)]
    assert max(sizes) - min(sizes) <= 1


def test_folds_through_the_settings_and_their_mistakes():
    splits = datasets.load(datasets.DataSettings("digits", folds=2, fold=1))
    assert (splits["train"].class_names, splits["val"].class_names) == (["0", "1", "2"], ["3", "4"])
    with pytest.raises(UserError, match="--folds 6: the training split has 5 classes"):
        datasets.load(datasets.DataSettings("digits", folds=6, fold=0))
    with pytest.raises(SettingError, match="fold one of 0-1"):
        datasets.DataSettings("digits", folds=2, fold=2)
    with pytest.raises(SettingError, match="drop one of them"):
        datasets.DataSettings("digits", folds=2, use_tv_split=True)


def test_folds_of_a_one_class_split_say_one_class():
    with pytest.raises(UserError) as error:
        class_folds(in_memory([0, 0, 0]), 2, 0)
    assert str(error.value) == ("--folds 2: the training split has 1 class, too few for 2 class-disjoint folds; "
                                "drop --folds")


def in_memory(labels, super_labels=None):
    labels = np.asarray(labels)
    return ImageDataset(labels, [f"c{label}" for label in range(labels.max() + 1)],
                        pixels=np.zeros((len(labels), 2, 2), dtype=np.uint8), super_labels=super_labels)


def released_spaced_positions(n, perc):
    """Revisiting-DML's cub200.py: the positions round(j (n - 1) / (k - 1)), j < k = int(n perc)."""
    k = int(n * perc)
    return sorted({round(j * (n - 1) / (k - 1)) for j in range(k)}) if k > 1 else [0]


@pytest.mark.parametrize("n,perc", [(60, 0.8), (41, 0.8), (59, 0.85), (10, 0.75), (7, 0.5), (5, 0.3)])
def test_val_split_by_samples_spaced_is_the_released_rule(n, perc):
    dataset = in_memory(np.repeat([0, 1], [n, 3]))
    dataset.pixels[:, 0, 0] = np.arange(n + 3)  # tag each image with its index
    train, val = split_train_val(dataset, perc, by_samples=True, sample_rule="spaced")
    assert train.pixels[train.labels == 0, 0, 0].tolist() == released_spaced_positions(n, perc)
    assert sorted(train.pixels[:, 0, 0].tolist() + val.pixels[:, 0, 0].tolist()) == list(range(n + 3))


def test_val_split_by_samples_spaced_picks_the_positions():
    labels = np.zeros(10, dtype=np.int64)
    dataset = in_memory(np.concatenate([labels, [1, 1]]))
    dataset.pixels[:, 0, 0] = np.arange(12)  # tag each image with its index
    train, val = split_train_val(dataset, 0.8, by_samples=True, sample_rule="spaced")
    # linspace(0, 9, 8) = 0, 1.29, 2.57, 3.86, 5.14, 6.43, 7.71, 9: images 2 and 7 validate
    assert train.pixels[train.labels == 0, 0, 0].tolist() == [0, 1, 3, 4, 5, 6, 8, 9]
    assert val.pixels[val.labels == 0, 0, 0].tolist() == [2, 7]


def test_val_split_by_samples_first_takes_each_class_prefix():
    dataset = in_memory([0, 1, 0, 1, 0, 0, 1, 0, 1, 1])
    dataset.pixels[:, 0, 0] = np.arange(10)
    train, val = split_train_val(dataset, 0.7, by_samples=True, sample_rule="first")
    # class 0 (5 images) keeps int(3.5) = 3, class 1 (5 images) as well, in file order
    assert train.pixels[:, 0, 0].tolist() == [0, 1, 2, 3, 4, 6]
    assert val.pixels[:, 0, 0].tolist() == [5, 7, 8, 9]


def test_val_split_by_classes_truncates_as_the_released_code():
    # int(0.29 * 100) is 28 in floating point, as in the released code (round() would give 29)
    train, val = split_train_val(in_memory(np.arange(100)), 0.29, by_samples=False)
    assert train.class_names == [f"c{label}" for label in range(28)] and val.n_classes == 72
    train, _ = split_train_val(in_memory(np.arange(10)), 0.75, by_samples=False)
    assert train.n_classes == 7


def test_val_split_by_classes_per_super_category():
    # super-category 1 holds classes 0 2 3 5 7, super-category 2 classes 1 4 6: int(0.7 n) of each train
    super_of_class = np.array([1, 2, 1, 1, 2, 1, 2, 1])
    labels = np.repeat(np.arange(8), 2)
    train, val = split_train_val(in_memory(labels, super_of_class[labels]), 0.7, by_samples=False)
    assert train.class_names == ["c0", "c1", "c2", "c3", "c4"] and val.class_names == ["c5", "c6", "c7"]
    assert_contiguous(train)
    assert train.super_labels.tolist() == super_of_class[np.repeat(np.arange(5), 2)].tolist()


def test_online_products_val_split_by_super_category(tmp_path):
    write_sop_tree(tmp_path)
    splits = datasets.select("online_products", str(tmp_path), use_tv_split=True, tv_split_perc=0.5, **SMALL)
    # bicycle (classes 11, 15): int(1.0) = 1 trains; chair (40): int(0.5) = 0 trains
    assert splits["train"].class_names == ["11"] and splits["val"].class_names == ["15", "40"]
    samples = datasets.select("online_products", str(tmp_path), use_tv_split=True, tv_split_perc=0.5,
                              tv_split_by_samples=True, **SMALL)
    assert [os.path.basename(path) for path in samples["train"].paths] == ["11_0.JPG", "15_0.JPG", "40_0.JPG"]
    assert [os.path.basename(path) for path in samples["val"].paths] == ["11_1.JPG"]


@pytest.mark.parametrize("perc, by_samples, message", [(0.1, False, "each side needs at least one"),
                                                        (1.0, True, "strictly between 0 and 1")])
def test_val_split_needs_both_sides(tmp_path, perc, by_samples, message):
    write_class_tree(tmp_path, ["a", "b", "c", "d"], images_per_class=1)
    with pytest.raises(UserError, match=message):
        datasets.select("folder", str(tmp_path), use_tv_split=True, tv_split_perc=perc,
                        tv_split_by_samples=by_samples)


def test_digits_disjoint_classes():
    splits = datasets.select("digits", None, crop_size=224)
    train, test = splits["train"], splits["test"]
    assert (len(train), len(test)) == (901, 896)
    assert train.class_names == ["0", "1", "2", "3", "4"] and test.class_names == ["5", "6", "7", "8", "9"]
    assert_contiguous(train)
    assert_contiguous(test)
    assert train.paths is None and train.pixels.dtype == np.uint8 and train.pixels.max() == 255
    assert train[0][0].shape == test[0][0].shape == (3, 32, 32)
    assert not any(isinstance(step, T.RandomHorizontalFlip) for step in train.transform.transforms)


@pytest.mark.parametrize("augmentation, crop", [("base", 32), ("adv", 32), ("big", 37), ("red", 32)])
def test_augmentations_give_their_crop(tmp_path, augmentation, crop):
    write_class_tree(tmp_path, ["a", "b"], images_per_class=1)
    splits = datasets.select("folder", str(tmp_path), augmentation=augmentation, **SMALL)
    assert splits["train"][0][0].shape == splits["test"][0][0].shape == (3, crop, crop)


def test_unknown_augmentation(tmp_path):
    with pytest.raises(UserError, match="unknown augmentation 'huge'.*base, adv, big, red"):
        datasets.select("folder", str(tmp_path), augmentation="huge")


def test_missing_source_names_paths_tried_and_layout(tmp_path):
    with pytest.raises(UserError, match=r"tried .*nowhere/images, .*nowhere/cub200/images, "
                                        r".*nowhere/CUB_200_2011/images.*<root>/images/<number>.<name>/<image>"):
        datasets.select("cub200", str(tmp_path / "nowhere"))


def test_source_required():
    with pytest.raises(UserError, match="--dataset cars196 needs --source"):
        datasets.select("cars196", None)


def test_wrong_layout_without_images_folder(tmp_path):
    write_image(tmp_path / "Audi" / "1.jpg")  # class folders straight under the root
    with pytest.raises(UserError, match=r"no images folder for folder \(tried .*images\); "
                                        r"point --source at a folder laid out as <root>/images/<class>/<image>$"):
        datasets.select("folder", str(tmp_path))


def test_wrong_layout_images_without_class_folders(tmp_path):
    write_image(tmp_path / "images" / "1.jpg")
    with pytest.raises(UserError, match="no class folders in .*images; expected <root>/images/<class>/<image>"):
        datasets.select("folder", str(tmp_path))


def test_empty_class_folder(tmp_path):
    write_class_tree(tmp_path, ["a", "b"], images_per_class=1)
    (tmp_path / "images" / "c").mkdir()
    (tmp_path / "images" / "c" / "readme.txt").write_text("")
    with pytest.raises(UserError, match=r"class folder .*images/c holds no images"):
        datasets.select("folder", str(tmp_path))


def test_corrupt_image_names_the_file(tmp_path):
    write_class_tree(tmp_path, ["a", "b"], images_per_class=1)
    broken = tmp_path / "images" / "a" / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    with pytest.raises(UserError, match=f"{broken} does not decode as an image .*--on_bad_image skip"):
        datasets.select("folder", str(tmp_path), **SMALL)
    with pytest.raises(UserError, match=f"cannot read image {broken}: .*; remove or replace the file"):
        load_rgb(str(broken))


def test_sixteen_bit_grayscale_keeps_its_contrast(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16)).save(path)  # mid-grey in 16 bits
    assert np.asarray(load_rgb(str(path))).max() == 128


@pytest.mark.parametrize("scale,expected", [(1.0, 128), (255.0, 128), (65535.0, 128)])
def test_float_tiff_keeps_its_contrast(tmp_path, scale, expected):
    path = tmp_path / "float.tif"
    ramp = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    ramp[0, 0], ramp[3, 3] = 128.5 / 255, 1.0  # one mid-grey pixel, one full-scale pixel
    Image.fromarray(ramp * scale, mode="F").save(path)
    pixels = np.asarray(load_rgb(str(path)))
    assert pixels.shape == (4, 4, 3) and pixels[0, 0, 0] == expected and pixels.max() == 255


def test_float_tiff_out_of_range_is_refused(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((4, 4), -3.0, dtype=np.float32), mode="F").save(path)
    with pytest.raises(UserError, match=r"cannot read image .*float.tif: float pixels from -3 to -3, outside "):
        load_rgb(str(path))


def test_non_image_file_among_images_fails_by_default(cub_parent):
    with pytest.raises(UserError, match=r"notes\.txt is not an image .*--on_bad_image skip"):
        datasets.select("cub200", str(cub_parent))


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_leaves_out_corrupt_and_truncated_images_and_lists_them(tmp_path, workers):
    root = write_class_tree(tmp_path / "cars196", ["audi", "bmw", "fiat", "seat"], images_per_class=3)
    (root / "images" / "audi" / "img_1.jpg").write_bytes(b"garbage")
    truncated = root / "images" / "fiat" / "img_0.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    splits = datasets.select("cars196", str(root), on_bad_image="skip", workers=workers)
    train, test = splits["train"], splits["test"]
    assert (len(train), len(test)) == (5, 5)
    assert [os.path.relpath(p, root) for p in train.bad_files] == ["images/audi/img_1.jpg"]
    assert [os.path.relpath(p, root) for p in test.bad_files] == ["images/fiat/img_0.jpg"]
    with pytest.raises(UserError, match=r"img_1\.jpg does not decode.*--on_bad_image skip"):
        datasets.select("cars196", str(root))
