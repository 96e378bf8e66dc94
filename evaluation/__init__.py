"""Embedding extraction, exact kNN search and the metrics of a set of embeddings.

`compute(features, labels, names)` returns {name: value}; the names and their definitions
are in evaluation.metrics (`usage()` lists them). Shared ingredients (kNN lists, k-means
assignments, the full ranking) are derived once per call and serve every metric. The PNG
reports are in evaluation.reports; the commands are `python -m evaluation.reports`,
`python -m evaluation.export` and `python -m evaluation.classify`.
"""
from evaluation.features import embed
from evaluation.metrics import (
    check_names,
    compute,
    ranking_metrics,
    small_class_warnings,
    usage,
    vote_depths,
)
from evaluation.neighbours import diffusion_reranked, nearest_neighbours, search

__all__ = ["check_names", "compute", "diffusion_reranked", "embed", "nearest_neighbours",
           "ranking_metrics", "search", "small_class_warnings", "usage", "vote_depths"]
