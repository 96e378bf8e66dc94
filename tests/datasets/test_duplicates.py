"""Duplicate images (datasets.duplicates): the same file listed twice, or files of one content,
within a split or across splits that meet (issue 26: Recall@1 1.000 on a test list naming each
image twice, an In-Shop query also in the gallery, test images that are training images)."""
import json
import shutil

import numpy as np
import pytest

import datasets
import parameters
from datasets import duplicates, verify
from errors import UserError
from tests.images import write_image, write_inshop_tree

SMALL = {"crop_size": 32, "resize_size": 36}


def write_list(path, rows):
    path.write_text("".join(f"{image} {label}\n" for image, label in rows))
    return str(path)


@pytest.fixture
def images(tmp_path):
    """Twelve distinct images, 4 classes of 3: img/<n>.png."""
    for number in range(12):
        write_image(tmp_path / "img" / f"{number}.png", seed=number)
    return [(f"img/{number}.png", number // 3) for number in range(12)]


def select_lists(tmp_path, train, test, **options):
    lists = {"train_list": write_list(tmp_path / "train.txt", train), "test_list": write_list(tmp_path / "test.txt",
                                                                                             test)}
    return datasets.select("list", None, lists=lists, **SMALL, **options)


def test_a_test_list_naming_each_image_twice_stops_with_the_count_and_the_first(tmp_path, images):
    test = images[6:] + images[6:]
    with pytest.raises(UserError) as error:
        select_lists(tmp_path, images[:6], test, duplicates="fail")
    message = str(error.value)
    assert message.startswith("6 duplicate image(s) (6 in test; first: test ")
    assert "img/6.png (" in message and "test.txt line 7) is listed again from test line 1" in message
    assert "--duplicates drop" in message and "\n" not in message
    dropped = select_lists(tmp_path, images[:6], test, duplicates="drop")["test"]
    assert len(dropped) == 6 and len(dropped.duplicates) == 6
    assert len(select_lists(tmp_path, images[:6], test, duplicates="keep")["test"]) == 12
    warned = select_lists(tmp_path, images[:6], test, duplicates="warn")  # ranked as the released code ranks them
    assert len(warned["test"]) == 12 and len(warned["test"].duplicates) == 6
    note = duplicates.note(warned, "warn")
    assert note.startswith("warning: kept 6 duplicate image(s), ranked as listed") and "\n" not in note
    assert "--duplicates drop" in note and "--duplicates fail" in note
    assert duplicates.note(select_lists(tmp_path, images[:6], images[6:], duplicates="warn"), "warn") is None


def test_test_images_that_are_training_images_by_content(tmp_path, images):
    """train_gallery ranks the test images against the training images: a copy finds itself."""
    for number in (0, 1):
        shutil.copy(tmp_path / "img" / f"{number}.png", tmp_path / "img" / f"copy_{number}.png")
    test = images[6:] + [("img/copy_0.png", 0), ("img/copy_1.png", 0)]
    with pytest.raises(UserError, match=r"2 duplicate image\(s\) \(2 in test; first: test .*copy_0.png .* is the "
                                        r"same content as train .*img/0.png"):
        select_lists(tmp_path, images[:6], test, duplicates="fail")
    splits = select_lists(tmp_path, images[:6], test, duplicates="drop")
    assert len(splits["train"]) == 6 and len(splits["test"]) == 6  # the training images stay whole
    assert not any("copy" in path for path in splits["test"].paths)


def test_an_inshop_query_also_in_the_gallery(tmp_path):
    root = write_inshop_tree(tmp_path / "inshop")
    partition = root / "Eval" / "list_eval_partition.txt"
    lines = partition.read_text().splitlines()
    gallery_line = next(line for line in lines if line.endswith(" gallery"))
    partition.write_text("\n".join(lines + [gallery_line.replace(" gallery", " query")]) + "\n")
    with pytest.raises(UserError, match=r"1 duplicate image\(s\) \(1 in query; first: query .*02_2_front.jpg .* is "
                                        "listed again from gallery"):
        datasets.select("inshop", str(root), duplicates="fail", **SMALL)
    splits = datasets.select("inshop", str(root), duplicates="drop", **SMALL)
    assert (len(splits["query"]), len(splits["gallery"])) == (3, 6)


def test_files_of_equal_size_or_equal_head_are_not_duplicates(tmp_path):
    head = bytes(range(256)) * (duplicates.HEAD // 256)
    files = {"a": head + b"tail-1", "b": head + b"tail-2", "c": head + b"tail-1", "d": b"x" * 10, "e": b"y" * 10,
             "f": b"z" * 11}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    keys = duplicates.content_keys([str(tmp_path / name) for name in files], workers=2)
    key = {name: keys[str(tmp_path / name)] for name in files}
    assert key["a"] == key["c"] and len({key["a"], key["b"], key["d"], key["e"], key["f"]}) == 5


def test_validation_and_test_are_not_compared_and_the_first_copy_stays(tmp_path, images):
    lists = {"train_list": write_list(tmp_path / "train.txt", images[:6]),
             "val_list": write_list(tmp_path / "val.txt", images[6:]),
             "test_list": write_list(tmp_path / "test.txt", images[6:] + images[6:7])}
    with pytest.raises(UserError, match=r"1 duplicate image\(s\) \(1 in test; .*line 7\) is listed again from test "
                                        "line 1"):
        datasets.select("list", None, lists=lists, duplicates="fail", **SMALL)
    test = datasets.select("list", None, lists=lists, duplicates="drop", **SMALL)["test"]
    assert test.paths == [str(tmp_path / image) for image, _ in images[6:]]
    assert np.array_equal(np.bincount(test.labels), [3, 3])


def test_verify_counts_the_duplicates(tmp_path, images):
    rows, holds = verify.verify("list", None, lists={"train_list": write_list(tmp_path / "train.txt", images[:6]),
                                                     "test_list": write_list(tmp_path / "test.txt",
                                                                             images[6:] + images[6:8])})
    assert not holds
    (test,) = [row for row in rows if row["split"] == "test"]
    assert "2 duplicates (first: test " in test["check"] and test["images"] == 8


def test_the_flag_and_its_bad_values(capsys):
    assert parameters.parse(["--dataset", "digits", "--duplicates", "drop"]).data.duplicates == "drop"
    assert parameters.parse(["--dataset", "digits"]).data.duplicates == "fail"
    with pytest.raises(SystemExit):
        parameters.parse(["--dataset", "digits", "--duplicates", "ignore"])
    assert "--duplicates" in capsys.readouterr().err


@pytest.mark.parametrize("policy, sizes, said", [
    ("drop", (6, 6), "left out 3 duplicate image(s) (--duplicates drop; first: train "),
    ("warn", (8, 7), "warning: kept 3 duplicate image(s), ranked as listed as the released code does (first: train ")])
def test_a_run_says_how_many_copies_it_left_out_or_kept(tmp_path, images, capsys, policy, sizes, said):
    from training.run import Run

    argv = ["--dataset", "list", "--train_list", write_list(tmp_path / "train.txt", images[:6] + images[:2]),
            "--test_list", write_list(tmp_path / "test.txt", images[6:] + images[:1]),
            "--arch", "resnet18_frozen_normalize", "--not_pretrained", "--embed_dim", "8", "--image_size", "32",
            "--bs", "4", "--samples_per_class", "2", "--kernels", "0", "--n_epochs", "1",
            "--save_path", str(tmp_path / "runs"), "--duplicates", policy]
    state = Run(parameters.parse(argv))
    assert (len(state.splits["train"]), len(state.splits["test"])) == sizes
    output = capsys.readouterr().out
    assert said in output and output.count("duplicate image(s)") == 1


def test_an_image_listed_under_two_classes_is_a_conflict_under_each_policy(tmp_path, images):
    # img/6.png again under class 3 (it is of class 2): a conflict; img/7.png again under its class: a copy
    test = images[6:] + [("img/6.png", 3), ("img/7.png", 2)]
    with pytest.raises(UserError) as error:
        select_lists(tmp_path, images[:6], test, duplicates="fail")
    assert "2 duplicate image(s) (2 in test; " in str(error.value)
    assert ", 1 of them a conflict, the same image under two classes (first: test " in str(error.value)
    assert "img/6.png (" in str(error.value) and "line 7) is listed again from test line 1 under class 3, not 2)" \
        in str(error.value) and "give each image one class" in str(error.value)
    warned = select_lists(tmp_path, images[:6], test, duplicates="warn")
    assert len(warned["test"]) == 8 and len(warned["test"].conflicts) == 1
    assert duplicates.summary(warned, "warn") == {"policy": "warn", "copies": 2, "conflicts": 1}
    assert "; 1 of them a conflict, the same image under two classes (first: test " in duplicates.note(warned, "warn")
    # drop: the copies, and the conflict's first listing too: neither of its classes can be trusted
    dropped = select_lists(tmp_path, images[:6], test, duplicates="drop")
    assert sorted(path.split("/")[-1] for path in dropped["test"].paths) == ["10.png", "11.png", "7.png", "8.png",
                                                                              "9.png"]
    assert duplicates.summary(dropped, "drop") == {"policy": "drop", "copies": 2, "conflicts": 1}
    assert duplicates.summary(select_lists(tmp_path, images[:6], test, duplicates="keep"), "keep") == \
        {"policy": "keep", "copies": None, "conflicts": None}


def test_a_test_image_that_is_a_training_image_of_another_class_is_a_conflict(tmp_path, images):
    """Across splits by class name: the training images stay whole, the test copy is left out."""
    test = images[6:] + [("img/0.png", 2)]  # a training image of class 0
    splits = select_lists(tmp_path, images[:6], test, duplicates="warn")
    (conflict,) = splits["test"].conflicts
    assert conflict.endswith("is listed again from train " + f"{tmp_path / 'img/0.png'} ({tmp_path / 'train.txt'} "
                             "line 1) under class 2, not 0")
    dropped = select_lists(tmp_path, images[:6], test, duplicates="drop")
    assert (len(dropped["train"]), len(dropped["test"])) == (6, 6)
    same_class = select_lists(tmp_path, images[:6], images[6:] + [("img/0.png", 0)], duplicates="warn")
    assert same_class["test"].duplicates and not same_class["test"].conflicts


def test_verify_counts_the_conflicts(tmp_path, images):
    rows, holds = verify.verify("list", None, lists={"train_list": write_list(tmp_path / "train.txt", images[:6]),
                                                     "test_list": write_list(tmp_path / "test.txt",
                                                                             images[6:] + [("img/6.png", 3)])})
    (test,) = [row for row in rows if row["split"] == "test"]
    assert not holds and test["images"] == 7
    assert "1 duplicates (first: test " in test["check"]
    assert "; 1 of them under another class than their original (first: test " in test["check"]


@pytest.mark.slow
def test_a_run_writes_its_duplicates_to_its_summary(tmp_path, images):
    from tests.program import run_main

    runs = tmp_path / "runs"
    assert run_main(["--dataset", "list", "--train_list", write_list(tmp_path / "train.txt", images[:6]),
                     "--test_list", write_list(tmp_path / "test.txt", images[6:] + [("img/6.png", 3)]),
                     "--arch", "resnet18_frozen_normalize", "--not_pretrained", "--embed_dim", "8", "--image_size",
                     "32", "--bs", "4", "--samples_per_class", "2", "--kernels", "0", "--n_epochs", "1",
                     "--no_reports", "--save_checkpoints", "none", "--save_path", runs, "--savename", "run",
                     "--duplicates", "warn"]) == 0
    summary = json.loads((runs / "run" / "summary.json").read_text())
    assert summary["duplicates"] == {"policy": "warn", "copies": 1, "conflicts": 1}
