"""Every ranking metric for a query set against a separate gallery (evaluation.compute(..., gallery=)):
cases computed by hand, the default (a set against itself) as a special case, and equality with
pytorch-metric-learning's AccuracyCalculator on separate query and reference sets."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import evaluation
from datasets import ImageDataset
from evaluation.evaluator import EvaluationSettings, Evaluator
from evaluation.protocols import Ranking

RANKING = ["e_recall@1", "e_recall@2", "precision@2", "mAP@R", "r_precision", "map", "knn_top1@1"]


def points(*values):
    return np.array(values, dtype=np.float32)[:, None]


def test_queries_outside_the_gallery_by_hand():
    gallery = (points(0, 1, 2, 5), np.array(["a", "b", "a", "c"]))
    # 0.4 ranks a b a c; 4.0 ranks c a b a; 1.4 is of class d, which the gallery lacks (R = 0)
    result = evaluation.compute(points(0.4, 4.0, 1.4), np.array(["a", "c", "d"]), RANKING, gallery=gallery)
    assert result == pytest.approx({
        "e_recall@1": 2 / 3, "e_recall@2": 2 / 3, "precision@2": (1 / 2 + 1 / 2 + 0) / 3,
        "mAP@R": (1 / 2 + 1) / 2,  # the query of class d is left out: it has no R
        "r_precision": (1 / 2 + 1) / 2,
        "map": ((1 / 1 + 2 / 3) / 2 + 1) / 2,  # average precision over the whole ranking
        "knn_top1@1": 2 / 3})


def test_a_query_leaves_out_only_its_own_gallery_item_by_index_never_by_value():
    queries, labels = points(1.0), np.array(["a"])
    gallery = (points(1.0, 1.0), np.array(["b", "a"]))  # a b-item at the query's very place ranks first (lower index)
    outside = evaluation.compute(queries, labels, ["e_recall@1", "e_recall@2", "mAP@R"], gallery=gallery)
    assert outside == {"e_recall@1": 0.0, "e_recall@2": 1.0, "mAP@R": 0.0}  # R = 1: only the first retrieved counts
    # the query is gallery item 1: its ranking is item 0 alone, and no item of its class is left (R = 0)
    inside = evaluation.compute(queries, labels, ["e_recall@1", "precision@2", "r_precision"],
                                gallery=(*gallery, np.array([1])))
    assert inside["e_recall@1"] == 0.0 and inside["precision@2"] == 0.0 and np.isnan(inside["r_precision"])


def test_queries_inside_and_outside_the_gallery_by_hand():
    gallery = (points(0, 1, 3), np.array([0, 0, 1]))
    # query 0 is gallery item 0: it ranks 1 (class 0) then 3; query 2.9 ranks 3 (class 1) first
    result = evaluation.compute(points(0, 2.9), np.array([0, 1]), ["e_recall@1", "mAP@R", "map", "precision@2"],
                                gallery=(*gallery, np.array([0, -1])))
    assert result == pytest.approx({"e_recall@1": 1.0, "mAP@R": 1.0, "map": 1.0, "precision@2": (1 / 2 + 1 / 2) / 2})


def test_a_set_against_itself_is_the_default():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(12), 5)
    features = (rng.normal(size=(12, 6))[labels] + rng.normal(size=(60, 6))).astype(np.float32)
    names = RANKING + ["mAP_c", "mAP_10", "knn_top5", "nmi"]
    default = evaluation.compute(features, labels, names)
    assert evaluation.compute(features, labels, names, gallery=(features, labels, np.arange(60))) == default


def test_equals_accuracy_calculator_with_separate_query_and_reference_sets():
    accuracy_calculator = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(30, 8))
    query_labels, gallery_labels = rng.integers(0, 30, 200), rng.integers(0, 30, 300)
    queries = (centres[query_labels] + rng.normal(size=(200, 8))).astype(np.float32)
    gallery = (centres[gallery_labels] + rng.normal(size=(300, 8))).astype(np.float32)
    ours = evaluation.compute(queries, query_labels, ["precision@1", "r_precision", "mAP@R", "map"],
                              gallery=(gallery, gallery_labels))
    shared = {"precision_at_1": "precision@1", "r_precision": "r_precision", "mean_average_precision_at_r": "mAP@R"}
    arguments = (torch.from_numpy(queries), torch.from_numpy(query_labels), torch.from_numpy(gallery),
                 torch.from_numpy(gallery_labels))
    theirs = accuracy_calculator.AccuracyCalculator(include=tuple(shared), k="max_bin_count").get_accuracy(
        *arguments, ref_includes_query=False)
    for name, our_name in shared.items():
        assert ours[our_name] == pytest.approx(theirs[name], abs=1e-6), name
    full = accuracy_calculator.AccuracyCalculator(include=("mean_average_precision",), k=None).get_accuracy(
        *arguments, ref_includes_query=False)
    assert ours["map"] == pytest.approx(full["mean_average_precision"], abs=1e-6)


def test_a_custom_search_ranks_a_set_against_itself_only():
    with pytest.raises(ValueError, match="takes no gallery"):
        evaluation.compute(points(0, 1), [0, 0], ["e_recall@1"], neighbours=lambda f, k: None,
                           gallery=(points(0), [0]))


def test_queries_of_one_class_missing_from_the_gallery_are_one_class(capsys):
    """The evaluator's warning used to say "(1 classes)"."""
    def split(labels, names):
        return ImageDataset(labels, names, pixels=np.zeros((len(labels), 2, 2), dtype=np.uint8))

    splits = {"query": split([0, 1], ["a", "d"]), "gallery": split([0, 0], ["a"])}
    evaluator = Evaluator({name: SimpleNamespace(dataset=data) for name, data in splits.items()},
                          [Ranking("test", "query", "gallery", "query_gallery")],
                          EvaluationSettings(evaluation_metrics=("e_recall@1",), storage_metrics=()))
    evaluator.of_embeddings({"query": (points(0, 1), np.array([0, 1])), "gallery": (points(0, 1), np.array([0, 0]))})
    assert "1 of the 2 queries of the test row (1 class) have no image of their class" in capsys.readouterr().err
