"""The datasets as their owners publish them, on generated miniatures of each official layout:
CARS196 (official and devkit), SOP (official zip), CUB-200-2011 (official tgz), iNaturalist 2018
(Smooth-AP split), Tsinghua Dogs and list files; `python -m datasets.verify` and
`python -m datasets.prepare` on them; and one line, exit 2, for each kind of bad input."""
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

import datasets
from datasets import cars196, prepare, verify
from tests.images import (
    CAR_CLASSES,
    write_cars_trees,
    write_cub_official,
    write_dogs_tree,
    write_image,
    write_inat_tree,
    write_inshop_tree,
    write_lists,
    write_sop_official,
)
from tests.program import assert_one_line_error, run_command, run_main
from training.folder import read_csv

REPO = Path(__file__).resolve().parents[2]


def cars_official(root):
    return "cars196", write_cars_trees(root) / "official", []


def cars_devkit(root):
    return "cars196", write_cars_trees(root) / "devkit", []


def sop_official(root):
    write_sop_official(root / "Stanford_Online_Products")
    return "online_products", root, []  # the parent of the dataset folder works too


def cub_official(root):
    return "cub200", write_cub_official(root), []


def inat(root):
    return "inat2018", write_inat_tree(root), []


def dogs(root):
    return "tsinghua_dogs", write_dogs_tree(root), []


def lists(root):
    write_lists(root)
    return "list", None, ["--train_list", root / "CUB200_train.txt", "--test_list", root / "CUB200_val.txt"]


MINIATURES = [cars_official, cars_devkit, sop_official, cub_official, inat, dogs, lists]


def source_flags(source, extra):
    return (["--source", str(source)] if source else []) + [str(flag) for flag in extra]


def run_verify(argv, capsys):
    """python -m datasets.verify ARGV in this process: (exit status, stdout, stderr)."""
    return run_command(verify.main, argv, capsys)


def test_the_three_cars_layouts_give_the_same_split_in_the_same_class_order(tmp_path):
    root = write_cars_trees(tmp_path)
    loaded = {layout: datasets.select("cars196", str(root / layout), crop_size=32, resize_size=36)
              for layout in ("repackaged", "official", "devkit")}
    for split in ("train", "test"):
        reference = loaded["repackaged"][split]
        for layout in ("official", "devkit"):
            other = loaded[layout][split]
            assert other.class_names == reference.class_names
            assert other.labels.tolist() == reference.labels.tolist()
            assert [os.path.basename(path) for path in other.paths] == \
                [os.path.basename(path) for path in reference.paths]
    # by class index: the first half of cars_meta.mat's classes train; within a split they are
    # numbered in sorted name order, which is not the index order
    assert set(loaded["official"]["train"].class_names) == set(CAR_CLASSES[:3])
    assert loaded["official"]["train"].class_names == sorted(CAR_CLASSES[:3]) != CAR_CLASSES[:3]


@pytest.mark.parametrize("miniature", MINIATURES, ids=lambda miniature: miniature.__name__)
def test_each_official_layout_passes_verify(miniature, tmp_path, capsys):
    name, source, extra = miniature(tmp_path)
    status, out, _ = run_verify(["--dataset", name, *source_flags(source, extra), "--kernels", "0", "--partial"],
                                capsys)
    assert status == 0, out
    assert "everything holds" in out and "train" in out and "test" in out


def test_verify_compares_the_counts_with_the_published_ones(tmp_path, capsys):
    _, source, _ = cars_official(tmp_path)
    status, out, _ = run_verify(["--dataset", "cars196", "--source", source, "--kernels", "0"], capsys)
    assert status == 1
    assert "9 images, 8,054 published; 3 classes, 98 published" in out and "something does not hold" in out
    assert datasets.facts("cub200").published == {"train": (5864, 100), "test": (5924, 100)}


def test_verify_decodes_in_worker_processes_and_names_a_missing_or_corrupt_file(tmp_path, capsys):
    _, source, _ = inat(tmp_path)
    (source / "train_val2018" / "Plantae" / "7477" / "01a6f.jpg").unlink()
    (source / "train_val2018" / "Fungi" / "913" / "00a6f.jpg").write_bytes(b"\xff\xd8 truncated")
    status, out, _ = run_verify(["--dataset", "inat2018", "--source", source, "--kernels", "2", "--partial"], capsys)
    assert status == 1
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] in (["train"], ["test"])}
    assert "1 bad files" in rows["train"] and "01a6f.jpg" in rows["train"]
    assert "1 bad files" in rows["test"] and "00a6f.jpg" in rows["test"]


def test_verify_on_another_datasets_folder_is_one_line(tmp_path, capsys):
    _, source, _ = sop_official(tmp_path)
    status, _, err = run_verify(["--dataset", "cars196", "--source", source, "--kernels", "0"], capsys)
    assert_one_line_error(status, err, "no cars196 layout", "cars_annos.mat")


@pytest.mark.parametrize("miniature", MINIATURES, ids=lambda miniature: miniature.__name__)
def test_each_official_layout_trains_an_epoch(miniature, tmp_path, capsys):
    name, source, extra = miniature(tmp_path / "data")
    status = run_main(["--dataset", name, *source_flags(source, extra), "--not_pretrained", "--arch", "resnet18",
                       "--bs", "4", "--n_epochs", "1", "--kernels", "0", "--no_reports", "--save_checkpoints", "none",
                       "--save_path", tmp_path / "runs", "--savename", "run"])
    assert status == 0, capsys.readouterr().err
    rows = read_csv(tmp_path / "runs" / "run" / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["0", "1"] and {row["split"] for row in rows} == {"test"}
    # Tsinghua Dogs evaluates its val images against the training images of the same classes
    assert {row["protocol"] for row in rows} == {"train_gallery" if name == "tsinghua_dogs" else "self"}
    assert all(0 <= float(row["e_recall@1"]) <= 1 for row in rows)


def archives_of_cars(root):
    """The official download: car_ims.tgz and cars_annos.mat."""
    tree = write_cars_trees(root / "trees") / "official"
    with tarfile.open(root / "car_ims.tgz", "w:gz") as archive:
        archive.add(tree / "car_ims", arcname="car_ims")
    return [root / "car_ims.tgz", tree / "cars_annos.mat"]


def archives_of_sop(root):
    """The official Stanford_Online_Products.zip."""
    tree = write_sop_official(root / "tree" / "Stanford_Online_Products")
    with zipfile.ZipFile(root / "Stanford_Online_Products.zip", "w") as archive:
        for path in sorted(tree.rglob("*")):
            archive.write(path, path.relative_to(tree.parent))
    return [root / "Stanford_Online_Products.zip"]


def archives_of_inshop(root):
    """DeepFashion In-Shop's img.zip and the loose Eval/list_eval_partition.txt."""
    tree = write_inshop_tree(root / "tree")
    with zipfile.ZipFile(root / "img.zip", "w") as archive:
        for path in sorted((tree / "img").rglob("*")):
            archive.write(path, path.relative_to(tree))
    return [root / "img.zip", tree / "Eval" / "list_eval_partition.txt"]


def run_prepare(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        prepare.main([str(flag) for flag in argv])
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


@pytest.mark.parametrize("name, archives", [("cars196", archives_of_cars), ("online_products", archives_of_sop),
                                            ("inshop", archives_of_inshop)])
def test_prepare_turns_the_official_archives_into_a_verified_tree(name, archives, tmp_path, capsys):
    status, out, _ = run_prepare([name, *archives(tmp_path), "--out", tmp_path / "prepared", "--kernels", "0",
                                  "--partial"], capsys)
    assert status == 0, out
    assert "everything holds" in out
    splits = datasets.select(name, str(tmp_path / "prepared"))
    assert len(splits["train"]) > 0 and all(len(split) > 0 for split in splits.values())


def test_a_prepared_tree_trains(tmp_path, capsys):
    assert run_prepare(["cars196", *archives_of_cars(tmp_path), "--out", tmp_path / "cars", "--kernels", "0",
                        "--partial"], capsys)[0] == 0
    status = run_main(["--dataset", "cars196", "--source", tmp_path / "cars", "--not_pretrained", "--arch", "resnet18",
                       "--bs", "4", "--n_epochs", "1", "--kernels", "0", "--no_reports", "--save_checkpoints", "none",
                       "--save_path", tmp_path / "runs", "--savename", "run"])
    assert status == 0, capsys.readouterr().err
    assert len(read_csv(tmp_path / "runs" / "run" / "metrics.csv")) == 2


def test_prepare_refuses_an_archive_that_writes_outside_the_folder(tmp_path, capsys):
    write_image(tmp_path / "image.jpg")
    with tarfile.open(tmp_path / "evil.tar", "w") as archive:
        archive.add(tmp_path / "image.jpg", arcname="../escaped.jpg")
    status, _, err = run_prepare(["cars196", tmp_path / "evil.tar", "--out", tmp_path / "out"], capsys)
    assert_one_line_error(status, err, "evil.tar holds ../escaped.jpg, outside the output folder")
    assert not (tmp_path / "escaped.jpg").exists()
    status, _, err = run_prepare(["cars196", tmp_path / "absent.tgz", "--out", tmp_path / "out"], capsys)
    assert_one_line_error(status, err, "no file", "absent.tgz")


def test_prepare_of_another_datasets_archive_is_one_line(tmp_path, capsys):
    status, _, err = run_prepare(["cars196", *archives_of_sop(tmp_path), "--out", tmp_path / "out"], capsys)
    assert_one_line_error(status, err, "no cars196 layout")


def run_on(name, source, extra, tmp_path, capsys):
    """main.py on a dataset that should be refused before training: (status, stderr)."""
    status = run_main(["--dataset", name, *source_flags(source, extra), "--not_pretrained", "--arch", "resnet18",
                       "--bs", "4", "--n_epochs", "1", "--kernels", "0", "--save_path", tmp_path / "runs"])
    return status, capsys.readouterr().err


def test_a_list_label_that_is_not_an_integer(tmp_path, capsys):
    name, source, extra = lists(tmp_path)
    path = tmp_path / "CUB200_train.txt"
    path.write_text(path.read_text().replace("images/002/0.jpg 2", "images/002/0.jpg Laysan_Albatross"))
    status, err = run_on(name, source, extra, tmp_path, capsys)
    assert_one_line_error(status, err, "CUB200_train.txt line 3 is 'images/002/0.jpg Laysan_Albatross'",
                   "expected one 'path label' a line, the label an integer")
    assert not (tmp_path / "runs").exists()


def test_list_paths_may_be_absolute_and_shared_labels_keep_the_training_numbers(tmp_path):
    write_lists(tmp_path)
    test_list = tmp_path / "CUB200_test.txt"  # other images of the training classes: a seen-class split
    for label in (1, 2):
        write_image(tmp_path / "images" / f"{label:03d}" / "test.jpg", seed=100 + label)
    test_list.write_text("".join(f"{tmp_path / 'images' / f'{label:03d}' / 'test.jpg'} {label}\n" for label in (2, 1)))
    splits = datasets.select("list", None, lists={"train_list": str(tmp_path / "CUB200_train.txt"),
                                                   "test_list": str(test_list),
                                                   "val_list": str(tmp_path / "CUB200_val.txt")})
    assert list(splits) == ["train", "val", "test"]
    assert splits["train"].class_names == ["1", "2"] and splits["val"].class_names == ["3", "4"]
    assert splits["test"].class_names == ["1", "2"] and splits["test"].labels.tolist() == [1, 0]
    assert splits["test"].paths[0] == str(tmp_path / "images" / "002" / "test.jpg")


def write_records(path, key, fields):
    table = np.zeros((1, 1), dtype=[(field, "O") for field in fields])
    table[0, 0] = tuple(["car_ims/000001.jpg" if field == "relative_im_path" else 1 for field in fields])
    savemat(path, {key: table})


@pytest.mark.parametrize("damage, fragments", [
    (lambda root: write_records(root / "cars_annos.mat", "annotations", ["relative_im_path", "label"]),
     ["cars_annos.mat has no annotations with the fields relative_im_path, class", "fields found: relative_im_path, "
      "label"]),
    (lambda root: (root / "cars_annos.mat").write_text("not a MATLAB file"),
     ["cannot read", "cars_annos.mat as a MATLAB file"]),
    # a text file that starts like a MATLAB header: an IndexError inside scipy's reader
    (lambda root: (root / "cars_annos.mat").write_text("MATLAB 5.0 MAT-file\n"),
     ["cannot read", "cars_annos.mat as a MATLAB file"]),
    (lambda root: (root / "car_ims" / "000005.jpg").unlink(), ["000005.jpg is missing", "restore them"]),
])
def test_cars_annotation_problems_are_one_line(damage, fragments, tmp_path, capsys):
    name, source, extra = cars_official(tmp_path)
    damage(source)
    status, err = run_on(name, source, extra, tmp_path, capsys)
    assert_one_line_error(status, err, *fragments)


def test_a_devkit_without_the_labelled_test_annotations(tmp_path, capsys):
    name, source, extra = cars_devkit(tmp_path)
    (source / "devkit" / "cars_test_annos_withlabels.mat").rename(source / "devkit" / "cars_test_annos.mat")
    status, err = run_on(name, source, extra, tmp_path, capsys)
    assert_one_line_error(status, err, "missing", "cars_test_annos_withlabels.mat")


def test_a_half_extracted_sop_names_the_list_line_of_the_missing_image(tmp_path, capsys):
    name, source, extra = sop_official(tmp_path)
    for image in (source / "Stanford_Online_Products" / "chair_final").iterdir():
        image.unlink()
    status, err = run_on(name, source, extra, tmp_path, capsys)
    assert_one_line_error(status, err, "4 image file(s) missing", "chair_final/3_0.JPG",
                          "Ebay_test.txt line 2) is missing")


def test_an_inat_list_line_that_is_not_an_image_path(tmp_path, capsys):
    name, source, extra = inat(tmp_path)
    path = source / "Inaturalist_test_set1.txt"
    path.write_text(path.read_text() + "913.jpg\n")
    status, err = run_on(name, source, extra, tmp_path, capsys)
    assert_one_line_error(status, err, "Inaturalist_test_set1.txt line 5 is '913.jpg'",
                          "train_val2018/<kingdom>/<species>")


def test_tsinghua_dogs_val_classes_must_be_training_classes(tmp_path, capsys):
    name, source, extra = dogs(tmp_path)
    write_image(source / "val" / "7-n000999-Husky" / "n999.jpg")
    status, err = run_on(name, source, extra, tmp_path, capsys)
    assert_one_line_error(status, err, "holds 1 class folder(s) that train/ lacks (e.g. n000999-Husky)")


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "cub200", "--train_list", "a.txt"], "--train_list names the files of --dataset list"),
    (["--dataset", "list", "--train_list", "a.txt"], "--dataset list needs --train_list FILE and --test_list FILE"),
])
def test_list_flags_are_checked_with_the_others(argv, message, capsys):
    import parameters

    with pytest.raises(SystemExit):
        parameters.parse(argv)
    assert message in capsys.readouterr().err


def test_on_the_real_class_names_sorting_and_the_class_index_split_alike():
    # cars_meta.mat's class_names, in class-index order
    names = (REPO / "tests" / "datasets" / "cars196_class_names.txt").read_text().splitlines()
    assert len(names) == len(set(names)) == 196
    folders = [name.replace("/", "-") for name in names]  # a folder name cannot hold "Ram C/V"'s slash
    assert set(sorted(folders)[:98]) == set(folders[:98])
    assert (names[97], names[98]) == ("Eagle Talon Hatchback 1998", "FIAT 500 Abarth 2012")
    assert sorted(folders[:98]) != folders[:98]  # within a split the orders differ
    train, test = cars196.by_class_index([f"{index:06d}.jpg" for index in range(196)], list(range(1, 197)), names,
                                         "cars_annos.mat")
    assert train.class_names == sorted(names[:98]) and test.class_names == sorted(names[98:])
