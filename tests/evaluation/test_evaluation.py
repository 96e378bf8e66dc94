import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

import datasets
import diffusion
import evaluation
from evaluation.neighbours import nearest_neighbours


def test_recall_on_a_hand_computed_line():
    # Points on a line; neighbours by distance: 0->[1,2,3], 1->[0,2,3], 2->[1,0,3], 3->[2,1,0].
    features = np.array([[0.0], [1.0], [3.0], [10.0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    result = evaluation.compute(features, labels, ["e_recall@1", "e_recall@2", "e_recall@3"])
    assert result == {"e_recall@1": 0.75, "e_recall@2": 0.75, "e_recall@3": 1.0}


def test_cosine_recall_ignores_norms():
    features = np.array([[1.0, 0.0], [9.0, 0.5], [1.0, 1.2], [0.5, 0.7]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    # By angle: 0->1, 1->0, 2->3, 3->2, all hits. By distance: 0->3 misses, 1->0, 2->3, 3->2 hit.
    assert evaluation.compute(features, labels, ["c_recall@1"])["c_recall@1"] == 1.0
    assert evaluation.compute(features, labels, ["e_recall@1"])["e_recall@1"] == 0.75


def test_query_is_never_its_own_neighbour_even_among_duplicates():
    features = np.zeros((5, 3), dtype=np.float32)
    neighbours = nearest_neighbours(features, 4)
    for query, row in enumerate(neighbours):
        assert query not in row and sorted(row) == sorted(set(range(5)) - {query})
    labels = np.array([0, 1, 2, 3, 4])
    assert evaluation.compute(features, labels, ["e_recall@4"])["e_recall@4"] == 0.0


def test_recall_is_monotone_and_chunking_changes_nothing(monkeypatch):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 8)).astype(np.float32)
    labels = rng.integers(0, 20, size=300)
    names = ["e_recall@1", "e_recall@2", "e_recall@4", "e_recall@8"]
    whole = evaluation.compute(features, labels, names)
    monkeypatch.setattr("evaluation.neighbours.QUERY_CHUNK", 7)
    assert evaluation.compute(features, labels, names) == whole
    values = [whole[name] for name in names]
    assert values == sorted(values)
    # Brute force check of Recall@4.
    distances = ((features[:, None] - features[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    top4 = np.argsort(distances, axis=1, kind="stable")[:, :4]
    assert whole["e_recall@4"] == pytest.approx(np.mean((labels[top4] == labels[:, None]).any(1)))


def test_nmi_clusters_into_the_classes_of_the_evaluated_set(monkeypatch):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(7, 16)) * 20
    labels = np.repeat(np.arange(7), 30)
    features = (centres[labels] + rng.normal(size=(210, 16))).astype(np.float32)
    calls = []
    kmeans = evaluation.metrics._kmeans

    def recording_kmeans(features, n_clusters, seed):
        calls.append(kmeans(features, n_clusters, seed))
        return calls[-1]

    monkeypatch.setattr(evaluation.metrics, "_kmeans", recording_kmeans)
    nmi = evaluation.compute(features, labels, ["nmi"])["nmi"]
    assert len(np.unique(calls[0])) == 7
    assert nmi == pytest.approx(normalized_mutual_info_score(labels, calls[0])) and nmi > 0.75
    assert evaluation.compute(features, rng.permutation(labels), ["nmi"])["nmi"] < 0.2


def test_metric_names_are_checked():
    with pytest.raises(ValueError, match="e_recall@K"):
        evaluation.check_names(["recall@1"])
    assert datasets.facts("online_products").metrics[:4] == ("e_recall@1", "e_recall@10", "e_recall@100",
                                                             "e_recall@1000")


def test_diffusion_reranking_feeds_the_ranking_metrics_only():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(10), 8)
    features = (rng.normal(size=(10, 16))[labels] + rng.normal(size=(80, 16))).astype(np.float32)
    assert evaluation.ranking_metrics(["e_recall@1", "nmi", "mAP@R", "map", "dists@intra"]) == ["e_recall@1",
                                                                                                 "mAP@R"]
    reranked = evaluation.compute(features, labels, ["e_recall@1", "e_recall@4"],
                                  neighbours=evaluation.diffusion_reranked(diffusion.rerank_settings(k=5), 20))
    by_hand = diffusion.rerank(features, nearest_neighbours(features, 20), 4, diffusion.rerank_settings(k=5))
    hits = labels[by_hand] == labels[:, None]
    assert reranked == {"e_recall@1": pytest.approx(hits[:, 0].mean()), "e_recall@4": pytest.approx(hits.any(1).mean())}
