"""Every metric of evaluation.compute against hand-computed values and plain-loop references."""
import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.metrics import normalized_mutual_info_score

import evaluation
from errors import UserError
from evaluation import metrics, neighbours
from evaluation.voting import majority_vote

# Five points on a line. Squared distances tie exactly: 0 is as far from 1 as from 2, and 1 as
# far from 0 as from 3; the lower index ranks first. Rankings (query left out):
#   0 (a): 1 2 3 4     hits at rank 0      R = 1
#   1 (a): 0 3 2 4     hits at rank 0      R = 1
#   2 (b): 0 1 3 4     hits at rank 2      R = 1
#   3 (b): 1 0 2 4     hits at rank 2      R = 1
#   4 (c): 3 1 0 2     a class of one      R = 0
LINE = np.array([[0.0], [1.0], [-1.0], [2.0], [10.0]], dtype=np.float32)
LINE_LABELS = np.array(["a", "a", "b", "b", "c"])
LINE_EXPECTED = {
    "e_recall@1": 2 / 5, "e_recall@2": 2 / 5, "e_recall@3": 4 / 5, "e_recall@4": 4 / 5,
    "e_recall@100": 4 / 5,  # k larger than the gallery: the whole gallery is retrieved
    "precision@1": 2 / 5, "precision@2": (1 / 2 + 1 / 2) / 5, "precision@3": (4 / 3) / 5,
    "precision@10": (4 / 4) / 5,  # only N - 1 = 4 rows can be retrieved
    "mAP@R": 2 / 4, "r_precision": 2 / 4,  # the class of one is left out
    "map": (1 + 1 + 1 / 3 + 1 / 3) / 4,
    "mAP_c": (1 / 2 + 1 / 2 + 0 + 0 + 0) / 5,  # Revisiting-DML: over n_c retrieved, divided by n_c
    "mAP_1000": (1 / 2 + 1 / 2 + (1 / 3) / 2 + (1 / 3) / 2 + 0) / 5,
    # votes of the 3 nearest: 0 -> a b b, 1 -> a b b, 2 -> a a b, 3 -> a a b, 4 -> b a a
    "knn_top1@3": 0.0, "knn_top5@3": 4 / 5,
    # votes of the 2 nearest: 0 -> a b (1:1, a is nearer), 1 -> a b, 2 -> a a, 3 -> a a, 4 -> b a
    "knn_top1@2": 2 / 5,
}


def test_every_ranking_metric_on_a_hand_computed_line_with_ties():
    result = evaluation.compute(LINE, LINE_LABELS, list(LINE_EXPECTED))
    assert result == pytest.approx(LINE_EXPECTED, abs=1e-12)


def test_ties_go_to_the_lower_index_on_every_search_path(monkeypatch):
    expected = np.array([[1, 2, 3, 4], [0, 3, 2, 4], [0, 1, 3, 4], [1, 0, 2, 4], [3, 1, 0, 2]])
    assert (neighbours.nearest_neighbours(LINE, 4, device="cpu") == expected).all()
    assert (neighbours.torch_search(LINE, LINE, 4, exclude_self=True) == expected).all()
    # Ties at the k-th place: 0 has 1 and 2 at distance 1, only one of them fits.
    assert (neighbours.torch_search(LINE, LINE, 1, exclude_self=True)[:, 0] == expected[:, 0]).all()
    monkeypatch.setattr(neighbours, "BLOCK_BYTES", 4 * 5)  # one query per block
    assert (neighbours.torch_search(LINE, LINE, 2, exclude_self=True) == expected[:, :2]).all()


def test_duplicates_tie_and_never_return_the_query():
    features = np.zeros((7, 3), dtype=np.float32)
    for search in (neighbours.nearest_neighbours, lambda f, k: neighbours.torch_search(f, f, k, exclude_self=True)):
        found = search(features, 3)
        for query, row in enumerate(found):
            assert list(row) == [i for i in range(7) if i != query][:3]
    assert neighbours.nearest_neighbours(features, 50).shape == (7, 6)


def brute_force_rankings(features):
    """Each row's other rows by (float64 distance, index): the rule every search follows."""
    features = features.astype(np.float64)
    distances = ((features[:, None] - features[None]) ** 2).sum(-1)
    rankings = []
    for query in range(len(features)):
        order = np.lexsort((np.arange(len(features)), distances[query]))
        rankings.append(order[order != query])
    return np.array(rankings)


def reference_metrics(features, labels, k=3, votes=4):
    """The definitions, written as loops over queries."""
    rankings = brute_force_rankings(features)
    n = len(labels)
    sums = Counter()
    with_positives = 0
    for query, ranking in enumerate(rankings):
        hits = labels[ranking] == labels[query]
        precision_at = np.cumsum(hits) / np.arange(1, n)
        r, class_size = hits.sum(), hits.sum() + 1
        sums["e_recall@1"] += hits[:1].any()
        sums[f"e_recall@{k}"] += hits[:k].any()
        sums[f"precision@{k}"] += hits[:k].sum() / min(k, n - 1)
        sums["mAP_c"] += (precision_at * hits)[:class_size].sum() / class_size
        sums["mAP_1000"] += (precision_at * hits)[:1000].sum() / class_size
        top = Counter(labels[ranking[:votes]])
        best = max(top.values())
        winner = next(label for label in labels[ranking[:votes]] if top[label] == best)  # the nearer of tied classes
        sums[f"knn_top1@{votes}"] += winner == labels[query]
        if r:
            with_positives += 1
            sums["mAP@R"] += (precision_at * hits)[:r].sum() / r
            sums["r_precision"] += hits[:r].sum() / r
            sums["map"] += (precision_at * hits).sum() / r
    per_query = {"mAP@R", "r_precision", "map"}
    return {name: total / (with_positives if name in per_query else n) for name, total in sums.items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_loops_over_queries_on_data_full_of_ties(seed):
    rng = np.random.default_rng(seed)
    features = rng.integers(0, 3, size=(80, 2)).astype(np.float32)  # many exact ties and duplicates
    labels = rng.integers(0, 12, size=80)
    labels[0] = 99  # a class of one
    expected = reference_metrics(features, labels)
    assert evaluation.compute(features, labels, list(expected)) == pytest.approx(expected, abs=1e-12)


def test_one_search_per_space_serves_every_knn_metric():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(60, 4)).astype(np.float32)
    labels = rng.integers(0, 6, size=60)
    calls = []

    def recording(features, k):
        calls.append(k)
        return neighbours.nearest_neighbours(features, k)

    names = ["e_recall@1", "e_recall@8", "c_recall@2", "precision@5", "mAP@R", "r_precision", "mAP_c", "mAP_1000",
             "knn_top1", "knn_top5@7"]
    assert evaluation.compute(features, labels, names, neighbours=recording) == evaluation.compute(features, labels,
                                                                                                  names)
    assert sorted(calls) == [2, 59]  # cosine to depth 2; euclidean once, to mAP_1000's depth (clipped)
    calls.clear()
    with_map = evaluation.compute(features, labels, ["e_recall@1", "map"], neighbours=recording)
    assert calls == [59] and with_map == pytest.approx(evaluation.compute(features, labels, ["e_recall@1", "map"]))


def test_a_custom_neighbours_callable_replaces_the_search():
    # A "re-ranker" that ranks the others by index, whatever the features say.
    def by_index(features, k):
        n = len(features)
        return np.array([[j for j in range(n) if j != i][:k] for i in range(n)])

    labels = np.array([0, 1, 0, 1])  # rankings 0: 1 2 3, 1: 0 2 3, 2: 0 1 3, 3: 0 1 2
    features = np.zeros((4, 2), dtype=np.float32)
    result = evaluation.compute(features, labels, ["e_recall@1", "mAP@R", "map", "knn_top1@1"], neighbours=by_index)
    assert result == pytest.approx({"e_recall@1": 1 / 4, "mAP@R": 1 / 4, "map": (1 / 2 + 1 / 3 + 1 + 1 / 2) / 4,
                                    "knn_top1@1": 1 / 4})


def test_full_ranking_in_small_blocks_changes_nothing(monkeypatch):
    rng = np.random.default_rng(3)
    features = rng.integers(0, 4, size=(50, 3)).astype(np.float32)
    labels = rng.integers(0, 5, size=50)
    whole = evaluation.compute(features, labels, ["map"])
    monkeypatch.setattr(neighbours, "BLOCK_BYTES", 32 * 50 * 3)
    assert evaluation.compute(features, labels, ["map"]) == whole
    assert whole["map"] == pytest.approx(reference_metrics(features, labels)["map"])


def test_f1_and_nmi_share_one_hand_made_clustering(monkeypatch):
    calls = []

    def fixed_kmeans(features, n_clusters, seed):
        calls.append(n_clusters)
        return np.array([0, 0, 0, 0, 1, 2])

    monkeypatch.setattr(metrics, "_kmeans", fixed_kmeans)
    labels = np.array([0, 0, 0, 1, 1, 2])
    result = evaluation.compute(np.zeros((6, 2), dtype=np.float32), labels, ["f1", "nmi"])
    # Pairs sharing a cluster: 6, of which same-class 3 -> precision 1/2. Same-class pairs: 4 -> recall 3/4.
    assert calls == [3]
    assert result["f1"] == pytest.approx(2 * 0.5 * 0.75 / 1.25)
    assert result["nmi"] == pytest.approx(normalized_mutual_info_score(labels, [0, 0, 0, 0, 1, 2]))


def test_f1_of_a_perfect_and_of_an_all_singletons_clustering(monkeypatch):
    labels = np.array([0, 0, 1, 1, 1])
    monkeypatch.setattr(metrics, "_kmeans", lambda features, n, seed: np.array([5, 5, 7, 7, 7]))
    assert evaluation.compute(np.zeros((5, 2), np.float32), labels, ["f1"])["f1"] == 1.0
    monkeypatch.setattr(metrics, "_kmeans", lambda features, n, seed: np.arange(5))
    assert evaluation.compute(np.zeros((5, 2), np.float32), labels, ["f1"])["f1"] == 0.0


def test_distances_within_and_between_classes():
    features = np.array([[1, 0], [0, 1],  # class a: cosine distance 1
                         [1, 0], [2, 0], [1, 1],  # class b
                         [0, 3]], dtype=np.float32)  # class c: one member, takes the largest class value
    labels = np.array([0, 0, 1, 1, 1, 2])
    b = 2 * (1 - 1 / math.sqrt(2)) / 3
    intra = (1 + b + 1) / 3
    inter = ((1 - 5 / math.sqrt(34)) + (1 - 1 / math.sqrt(2)) + (1 - 1 / math.sqrt(17))) / 3
    result = evaluation.compute(features, labels, ["dists@intra", "dists@inter", "dists@intra_over_inter"])
    assert result == pytest.approx({"dists@intra": intra, "dists@inter": inter,
                                    "dists@intra_over_inter": intra / inter})
    # The same through scipy's cosine distances, as Revisiting-DML computes them.
    centres = np.stack([features[labels == c].mean(0) for c in range(3)])
    assert result["dists@inter"] == pytest.approx(cdist(centres, centres, "cosine").sum() / 6)
    singletons = evaluation.compute(features[:3], [0, 1, 2], ["dists@intra"])
    assert math.isnan(singletons["dists@intra"])


def test_rho_spectrum():
    features = np.array([[3, 0], [0, 4], [0, 0]], dtype=np.float32)  # singular values 4 and 3
    s = np.array([4 / 7, 3 / 7])
    result = evaluation.compute(features, [0, 1, 1], ["rho_spectrum@1", "rho_spectrum@-1", "rho_spectrum@2"])
    assert result["rho_spectrum@1"] == pytest.approx(np.sum(0.5 * np.log(0.5 / s)))
    assert result["rho_spectrum@-1"] == pytest.approx(np.sum(s * np.log(s / 0.5)))
    assert result["rho_spectrum@2"] == pytest.approx(0.0)


def test_majority_vote_ties_go_to_the_nearer_class():
    votes = np.array([[3, 1, 1, 3], [2, 2, 1, 1], [4, 5, 6, 6], [7, 7, 7, 7]])
    assert majority_vote(votes, 3).tolist() == [[3, 1, -1], [2, 1, -1], [6, 4, 5], [7, -1, -1]]
    assert majority_vote(np.empty((2, 0), dtype=int), 1).tolist() == [[-1], [-1]]


def test_knn_accuracy_against_a_reference_split():
    reference = (np.array([[0.0], [1.0], [2.0], [10.0], [11.0]], dtype=np.float32), np.array(["x", "y", "y", "z", "z"]))
    queries = np.array([[0.2], [1.6], [10.4], [5.0]], dtype=np.float32)
    labels = np.array(["x", "y", "z", "x"])
    # 3 nearest reference rows: 0.2 -> x y y, 1.6 -> y y x, 10.4 -> z z y, 5.0 -> y y x (x is third)
    result = evaluation.compute(queries, labels, ["knn_top1@3", "knn_top5@3", "knn_top1@1"], gallery=reference)
    assert result == pytest.approx({"knn_top1@3": 2 / 4, "knn_top5@3": 4 / 4, "knn_top1@1": 3 / 4})


def test_agrees_with_pytorch_metric_learning():
    accuracy_calculator = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(40), rng.integers(2, 9, size=40))
    features = (rng.normal(size=(40, 8))[labels] + rng.normal(size=(len(labels), 8))).astype(np.float32)
    ours = evaluation.compute(features, labels, ["precision@1", "r_precision", "mAP@R", "map"])
    shared = {"precision_at_1": "precision@1", "r_precision": "r_precision",
              "mean_average_precision_at_r": "mAP@R"}
    theirs = accuracy_calculator.AccuracyCalculator(include=tuple(shared), k="max_bin_count").get_accuracy(
        torch.from_numpy(features), torch.from_numpy(labels))
    for name, our_name in shared.items():
        assert ours[our_name] == pytest.approx(theirs[name], abs=1e-6)
    full = accuracy_calculator.AccuracyCalculator(include=("mean_average_precision",), k=None).get_accuracy(
        torch.from_numpy(features), torch.from_numpy(labels))
    assert ours["map"] == pytest.approx(full["mean_average_precision"], abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_and_cpu_search_agree():
    rng = np.random.default_rng(5)
    features = rng.integers(0, 10, size=(1000, 4)).astype(np.float32)  # exact distances on both devices
    for k in (1, 10, 999):
        cpu = neighbours.nearest_neighbours(features, k, device="cpu")
        assert (neighbours.torch_search(features, features, k, exclude_self=True, device="cuda") == cpu).all()
    labels = rng.integers(0, 30, size=1000)
    names = ["e_recall@1", "e_recall@10", "mAP@R", "map"]
    assert evaluation.compute(features, labels, names) == evaluation.compute(
        features, labels, names, neighbours=lambda f, k: neighbours.nearest_neighbours(f, k, device="cpu"))


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="mAP@R.*knn_top1"):
        evaluation.check_names(["e_recall@1", "MAP@R"])
    for name in ["rho_spectrum@0", "knn_top0", "precision@0", "dists@outer"]:
        with pytest.raises(ValueError):
            evaluation.check_names([name])


def test_diverged_embeddings_are_a_user_error():
    features = np.ones((4, 2), dtype=np.float32)
    features[1, 0] = np.nan
    with pytest.raises(UserError, match="1 of 4 embeddings"):
        evaluation.compute(features, [0, 0, 1, 1], ["e_recall@1"])
