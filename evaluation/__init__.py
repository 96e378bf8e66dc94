"""Retrieval and clustering metrics of a set of embeddings.

`compute(features, labels, names)` returns {name: value}. Names: `e_recall@k` (euclidean
kNN), `c_recall@k` (cosine kNN), `nmi` (k-means with one cluster per class of the evaluated
set). The kNN lists and the k-means assignment are computed once and shared by every metric.
"""
from evaluation.features import embed
from evaluation.metrics import check_names, compute, default_metrics

__all__ = ["check_names", "compute", "default_metrics", "embed"]
