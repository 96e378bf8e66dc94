"""--dataset inshop (DeepFashion In-Shop Clothes Retrieval) on generated trees, and the evaluation
protocols that say which set each split is ranked against."""
import re

import numpy as np
import pytest

import datasets
import parameters
from errors import UserError
from evaluation.protocols import Ranking, rankings
from tests.images import write_class_tree, write_inshop_tree

SMALL = {"crop_size": 32, "resize_size": 36}


def test_inshop_reads_train_query_and_gallery(tmp_path):
    write_inshop_tree(tmp_path / "inshop")
    splits = datasets.select("inshop", str(tmp_path), **SMALL)  # the parent folder works too
    assert list(splits) == ["train", "query", "gallery"]
    assert (len(splits["train"]), len(splits["query"]), len(splits["gallery"])) == (8, 3, 6)
    assert splits["train"].n_classes == 4
    # query and gallery name the same items as classes
    query, gallery = splits["query"], splits["gallery"]
    assert query.class_names == gallery.class_names == ["id_00000004", "id_00000005", "id_00000006"]
    assert query[0][0].shape == (3, 32, 32)
    assert datasets.default_protocol("inshop") == "query_gallery"


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace("image_name item_id evaluation_status", "name item status"),
     "line 2 is name item status; expected the header"),
    (lambda text: text.replace(" query\n", " test\n", 1), "line 11 is .*; expected 'image_name item_id status'"),
    (lambda text: re.sub(r"\n[^\n]* query", "", text), "lists no query image"),
])
def test_inshop_list_file_errors_name_the_file_and_line(tmp_path, edit, message):
    write_inshop_tree(tmp_path)
    path = tmp_path / "Eval" / "list_eval_partition.txt"
    path.write_text(edit(path.read_text()))
    with pytest.raises(UserError, match=f"list_eval_partition.txt {message}" if "line" in message else message):
        datasets.select("inshop", str(tmp_path), **SMALL)


def test_inshop_missing_image_is_named_with_its_line(tmp_path):
    write_inshop_tree(tmp_path)
    (tmp_path / "img" / "WOMEN" / "Dresses" / "id_00000005" / "02_2_front.jpg").unlink()
    with pytest.raises(UserError, match=r"02_2_front.jpg \(.*list_eval_partition.txt line 15\) is missing"):
        datasets.select("inshop", str(tmp_path), **SMALL)


def test_protocols_say_what_each_split_is_ranked_against(tmp_path):
    inshop = datasets.select("inshop", str(write_inshop_tree(tmp_path / "inshop")), use_tv_split=True,
                             tv_split_perc=0.5, **SMALL)
    assert rankings(inshop, "query_gallery") == [Ranking("val", "val", None, "self"),
                                                Ranking("test", "query", "gallery", "query_gallery")]
    write_class_tree(tmp_path / "tree", [f"class_{index}" for index in range(4)], images_per_class=4)
    seen = datasets.select("folder", str(tmp_path / "tree"), use_tv_split=True, tv_split_by_samples=True,
                           tv_split_perc=0.5, **SMALL)
    # the validation images share the training classes; the test classes are other ones
    assert rankings(seen, "train_gallery") == [Ranking("val", "val", "train", "train_gallery"),
                                               Ranking("test", "test", None, "self")]
    assert rankings(seen, "self") == [Ranking("val", "val", None, "self"), Ranking("test", "test", None, "self")]
    with pytest.raises(ValueError, match="needs a dataset with query and gallery images"):
        rankings(seen, "query_gallery")


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "cub200", "--evaluation_protocol", "query_gallery"],
     "needs query and gallery images (--dataset inshop)"),
    (["--dataset", "inshop", "--evaluation_diffusion"], "does not apply to --evaluation_protocol query_gallery"),
    # issue 26: these gave no test row, no best checkpoint and "chosen on the test split: " with nothing after it
    (["--dataset", "inshop", "--evaluation_protocol", "self"],
     "--evaluation_protocol self needs test images, not --dataset inshop (its splits: train, query, gallery); "
     "use --evaluation_protocol query_gallery"),
    (["--dataset", "inshop", "--evaluation_protocol", "train_gallery"],
     "--evaluation_protocol train_gallery needs test images, not --dataset inshop"),
])
def test_impossible_protocols_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        parameters.parse(argv)
    assert message in capsys.readouterr().err


def test_inshop_defaults_to_its_papers_metrics():
    assert parameters.parse(["--dataset", "inshop"]).evaluation.evaluation_metrics == \
        ("e_recall@1", "e_recall@10", "e_recall@20", "e_recall@30", "e_recall@40", "mAP@R")
    assert np.all([name.startswith("e_recall") for name in parameters.parse(["--dataset", "cub200"])
                   .evaluation.evaluation_metrics[:4]])
