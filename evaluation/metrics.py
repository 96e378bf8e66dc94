import re

import faiss
import numpy as np
from sklearn.metrics import normalized_mutual_info_score

METRIC_PATTERN = re.compile(r"^(?:(?P<distance>[ec])_recall@(?P<k>[1-9]\d*)|nmi)$")
QUERY_CHUNK = 4096


def default_metrics(dataset):
    """The metrics the field reports per dataset (SPEC section 6)."""
    ks = (1, 10, 100, 1000) if dataset == "online_products" else (1, 2, 4, 8)
    return [f"e_recall@{k}" for k in ks] + ["nmi"]


def check_names(names):
    """ValueError naming the first unknown metric and the valid patterns."""
    for name in names:
        if not METRIC_PATTERN.match(name):
            raise ValueError(f"unknown metric {name!r}; valid: e_recall@K, c_recall@K (K >= 1), nmi")


def compute(features, labels, names, seed=0):
    check_names(names)
    features = np.ascontiguousarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    results = {}
    recall_ks = {"e": [], "c": []}
    for name in names:
        match = METRIC_PATTERN.match(name)
        if match["distance"]:
            recall_ks[match["distance"]].append(int(match["k"]))
    for distance, ks in recall_ks.items():
        if not ks:
            continue
        searched = features if distance == "e" else _l2_normalised(features)
        first_hit = _first_hit_rank(searched, labels, max(ks))
        for k in ks:
            results[f"{distance}_recall@{k}"] = float(np.mean(first_hit < k))
    if "nmi" in names:
        clusters = _kmeans(features, len(np.unique(labels)), seed)
        results["nmi"] = float(normalized_mutual_info_score(labels, clusters))
    return {name: results[name] for name in names}


def _l2_normalised(features):
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(features, k):
    """Indices (N x k) of each row's k nearest other rows by euclidean distance, nearest first.

    Exact search in chunks of queries, so memory stays O(N k). The query itself is never its
    own neighbour, even when duplicates tie with it at distance 0.
    """
    k = min(k, len(features) - 1)
    index = faiss.IndexFlatL2(features.shape[1])
    index.add(features)
    neighbours = np.empty((len(features), k), dtype=np.int64)
    for start in range(0, len(features), QUERY_CHUNK):
        queries = np.arange(start, min(start + QUERY_CHUNK, len(features)))
        _, found = index.search(features[queries], k + 1)
        # Stable sort moves the query to the end of its row wherever the search put it.
        is_self = found == queries[:, None]
        order = np.argsort(is_self, axis=1, kind="stable")
        neighbours[queries] = np.take_along_axis(found, order, axis=1)[:, :k]
    return neighbours


def _first_hit_rank(features, labels, k):
    """Rank (0-based) of the first neighbour sharing the query's label; k when none in the top k."""
    neighbour_labels = labels[nearest_neighbours(features, k)]
    hits = neighbour_labels == labels[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1), k)


def _kmeans(features, n_clusters, seed):
    kmeans = faiss.Kmeans(features.shape[1], n_clusters, niter=20, seed=seed,
                          min_points_per_centroid=1, max_points_per_centroid=10**6)
    kmeans.train(features)
    _, assignment = kmeans.index.search(features, 1)
    return assignment[:, 0]
