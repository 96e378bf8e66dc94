"""Metrics of a set of embeddings, by the names users pass in --evaluation_metrics.

Each metric declares the ingredients it needs: kNN lists of the euclidean features (or of
the L2-normalised ones for c_recall) to some depth, the k-means assignment, the full
ranking, each of the queries against a gallery (by default the evaluated set itself, each
query left out of its own ranking). `compute` asks every requested metric for
its needs, then derives each ingredient once, at the largest depth asked for, and serves
every metric from it. Queries are always left out of their own ranking; among equal
distances the lower index ranks first (evaluation.neighbours).
"""
import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import faiss
import numpy as np

from errors import UserError
from evaluation.neighbours import (
    full_ranking_positive_ranks,
    search,
)
from evaluation.voting import majority_vote
from registry import Registry

DEFAULT_VOTES = 20  # neighbours voting in knn_top<m> (the k-NN monitor of DINO / InstDisc)
ROW_CHUNK = 8192


@dataclass(frozen=True)
class Metric:
    usage: str  # how --help and error messages show the name
    regex: re.Pattern
    value: Callable  # value(evaluation, **params) -> float
    needs: Callable  # needs(evaluation, **params) -> {ingredient: depth}
    ranking: bool  # computed from kNN lists, so a re-ranking (--evaluation_diffusion) changes it
    bounds: Callable  # bounds(**params) -> (lowest, highest) value the metric can take


# By usage (the names --help shows), in the order of definition; a name is looked up by pattern.
METRICS = Registry("metric", order=None)


def register(pattern: str, usage: str, needs: Callable = lambda evaluation, **params: {}, ranking=False,
             bounds: Callable = lambda **params: (0.0, 1.0)):
    def add(value):
        METRICS.register(usage, Metric(usage, re.compile(f"^(?:{pattern})$"), value, needs, ranking, bounds))
        return value

    return add


def bounds(name):
    """(lowest, highest) value the metric `name` can take: a share or a score in [0, 1] unless it says
    otherwise."""
    metric, params = _parse(name)
    return metric.bounds(**params)


def ranking_metrics(names):
    """The names among `names` computed from kNN lists (all but clustering, spectra, distances, map)."""
    return [name for name in names if _parse(name)[0].ranking]


def vote_depths(names):
    """{name: its K} for the majority-vote metrics (knn_topM@K) among `names`."""
    depths = {}
    for name in names:
        metric, params = _parse(name)
        if metric.value is knn_accuracy:
            depths[name] = params["k"] or DEFAULT_VOTES
    return depths


def small_class_warnings(labels, depths, split):
    """One line for each `depths` entry ({what: k neighbours}) that looks further than the split's
    median class reaches (its size minus the query): there most neighbours are of other classes."""
    sizes = np.bincount(np.unique(labels, return_inverse=True)[1])
    reach = int(np.median(sizes)) - 1
    return [f"{what} looks at {k} neighbours, but the median class of the {split} split holds {reach + 1} images: "
            f"most neighbours are of other classes; use {max(reach, 1)} or fewer"
            for what, k in depths.items() if k > max(reach, 1)]


def usage() -> str:
    return ", ".join(METRICS.names())


def check_names(names):
    """ValueError naming the first unknown metric and the valid patterns."""
    for name in names:
        _parse(name)


def _parse(name):
    for metric in METRICS.values():
        match = metric.regex.match(name)
        if match:
            params = {key: int(value) if value is not None and value.lstrip("-").isdigit() else value
                      for key, value in match.groupdict().items()}
            return metric, params
    raise ValueError(f"unknown metric {name!r}; valid: {usage()} (K >= 1)")


def compute(features, labels, names, seed=0, neighbours=None, gallery=None):
    """{name: value} for each metric in `names`, of the queries `features` (N x D) of classes
    `labels`.

    gallery: (features, labels) or (features, labels, same) of the set the queries are ranked
        against (the knn_top metrics vote from it); `same` gives, for each query, the gallery
        row that is the same item (left out of its ranking), or -1. By default each query is
        ranked against the other queries (leave-one-out). Labels are compared by value, so the
        two sets must label classes alike; a query whose class the gallery lacks has R = 0.
        Clustering (nmi, f1), dists and rho_spectrum describe the queries.
    neighbours: a callable (features, k) -> (N x k) int indices, nearest first, self excluded,
        that replaces the exact search (nearest_neighbours) for every kNN-based metric of a
        set ranked against itself; the full-ranking metric map calls it with k = N - 1.
    """
    requested = [(name, *_parse(name)) for name in names]
    evaluation = Evaluation(features, labels, seed, neighbours, gallery)
    for _, metric, params in requested:
        evaluation.require(metric.needs(evaluation, **params))
    return {name: float(metric.value(evaluation, **params)) for name, metric, params in requested}


@dataclass(frozen=True)
class PositiveRanks:
    """0-based ranks of each query's same-class rows in its ranking (the query left out), sorted
    by query then rank; complete down to the depth of the lists they come from."""
    query: np.ndarray
    rank: np.ndarray
    n_queries: int

    def first(self):
        """Rank of each query's nearest same-class row; inf where none lies within depth."""
        starts = np.searchsorted(self.query, np.arange(self.n_queries))
        found = np.bincount(self.query, minlength=self.n_queries) > 0
        first = np.full(self.n_queries, np.inf)
        first[found] = self.rank[starts[found]]
        return first

    def count_below(self, cutoff):
        """Per query: same-class rows ranked below `cutoff` (a number or one per query)."""
        keep = self.rank < np.broadcast_to(cutoff, (self.n_queries,))[self.query]
        return np.bincount(self.query[keep], minlength=self.n_queries)

    def precision_sum(self, cutoff):
        """Per query: sum of precision@(rank + 1) over its same-class rows ranked below `cutoff`."""
        starts = np.searchsorted(self.query, np.arange(self.n_queries))
        hits_so_far = np.arange(len(self.query)) - starts[self.query] + 1
        keep = self.rank < np.broadcast_to(cutoff, (self.n_queries,))[self.query]
        return np.bincount(self.query[keep], weights=(hits_so_far / (self.rank + 1))[keep],
                           minlength=self.n_queries)


class Evaluation:
    """The queries, the gallery they are ranked against (by default the queries themselves, each
    left out of its own ranking), and the ingredients their metrics share, each derived at most once."""

    def __init__(self, features, labels, seed=0, neighbours=None, gallery=None):
        self.features = _finite(features)
        self.n = len(self.features)
        labels = np.asarray(labels)
        if gallery is None:
            self.labels = np.unique(labels, return_inverse=True)[1].reshape(-1)
            self.gallery_features, self.gallery_labels = self.features, self.labels
            self.same = np.arange(self.n)
        else:
            if neighbours is not None:
                raise ValueError("a custom neighbours search ranks a set against itself; it takes no gallery")
            gallery_features, gallery_labels, *same = gallery
            self.gallery_features = _finite(gallery_features)
            codes = np.unique(np.concatenate([labels, np.asarray(gallery_labels)]), return_inverse=True)[1]
            self.labels, self.gallery_labels = codes[:self.n], codes[self.n:]
            self.same = np.asarray(same[0], dtype=np.int64) if same else np.full(self.n, -1)
        in_gallery = self.same >= 0
        gallery_counts = np.bincount(self.gallery_labels, minlength=self.labels.max(initial=0) + 1)
        # R: the gallery rows of the query's class in its ranking, the query itself left out
        self.positives = gallery_counts[self.labels] - in_gallery
        self.class_sizes = self.positives + 1  # as Revisiting-DML counts a class: the query included
        self.ranked = len(self.gallery_features) - in_gallery  # rows each query's ranking holds
        self.n_classes = len(np.unique(self.labels))
        self.seed = seed
        self.custom_neighbours = neighbours
        self.depth = {}
        self._lists = {}
        self._ranks = {}

    def require(self, needs):
        for ingredient, depth in needs.items():
            self.depth[ingredient] = max(self.depth.get(ingredient, 0), depth)

    def neighbour_lists(self, space):
        """N x depth indices of each query's nearest gallery rows (itself left out), in `space`
        (euclidean or cosine)."""
        if space not in self._lists:
            depth = self.depth.get(space, 0)
            if space == "euclidean" and self.custom_neighbours is not None and "full" in self.depth:
                depth = self.n - 1  # one call of the custom search serves every metric
            depth = int(min(depth, self.ranked.min())) if self.n else 0
            to_space = (lambda x: x) if space == "euclidean" else _l2_normalised
            if self.custom_neighbours is not None:
                lists = np.asarray(self.custom_neighbours(to_space(self.features), depth))
            else:
                lists = search(to_space(self.features), to_space(self.gallery_features), depth, exclude=self.same)
            if depth == 0:
                lists = np.empty((self.n, 0), dtype=np.int64)
            if lists.shape != (self.n, depth):
                raise ValueError(f"the neighbours callable returned shape {lists.shape} for k={depth}, "
                                 f"expected {(self.n, depth)}")
            self._lists[space] = lists
        return self._lists[space]

    def ranks(self, space="euclidean"):
        if space not in self._ranks:
            lists = self.neighbour_lists(space)
            queries, ranks = [], []
            for start in range(0, self.n, ROW_CHUNK):
                hits = self.gallery_labels[lists[start:start + ROW_CHUNK]] == self.labels[start:start + ROW_CHUNK, None]
                query, rank = np.nonzero(hits)
                queries.append(query + start)
                ranks.append(rank)
            self._ranks[space] = PositiveRanks(np.concatenate(queries), np.concatenate(ranks), self.n)
        return self._ranks[space]

    @cached_property
    def full_ranks(self):
        if self.custom_neighbours is not None:
            return self.ranks("euclidean")
        query, rank = full_ranking_positive_ranks(self.features, self.labels,
                                                  gallery=(self.gallery_features, self.gallery_labels, self.same))
        return PositiveRanks(query, rank, self.n)

    def vote_labels(self, k):
        """Labels of the k nearest gallery rows each query votes with."""
        return self.gallery_labels[self.neighbour_lists("euclidean")[:, :k]]

    @cached_property
    def clusters(self):
        return _kmeans(self.features, self.n_classes, self.seed)


def _finite(features):
    features = np.ascontiguousarray(features, dtype=np.float32)
    if not np.isfinite(features).all():
        raise UserError(f"{np.count_nonzero(~np.isfinite(features).all(1))} of {len(features)} embeddings hold NaN "
                        "or inf values: the network diverged; lower --lr or --kd_lambda")
    return features


def _space(letter):
    return "cosine" if letter == "c" else "euclidean"


def _mean_over(values, mask):
    return float(np.mean(values[mask])) if mask.any() else math.nan


@register(r"(?P<space>[ec])_recall@(?P<k>[1-9]\d*)", "e_recall@K, c_recall@K",
          needs=lambda evaluation, space, k: {_space(space): k}, ranking=True)
def recall(evaluation, space, k):
    """Share of queries with a same-class row among their k nearest (euclidean, or cosine for c_)."""
    return np.mean(evaluation.ranks(_space(space)).first() < k)


@register(r"precision@(?P<k>[1-9]\d*)", "precision@K", needs=lambda evaluation, k: {"euclidean": k}, ranking=True)
def precision(evaluation, k):
    """Mean share of same-class rows among the k retrieved (the whole ranking when k is larger)."""
    retrieved = np.minimum(k, evaluation.ranked)
    return float(np.mean(np.where(retrieved > 0, evaluation.ranks().count_below(k) / np.maximum(retrieved, 1), 0.0)))


def _needs_r(evaluation):
    return {"euclidean": int(evaluation.positives.max(initial=0))}


@register(r"mAP@R", "mAP@R", needs=_needs_r, ranking=True)
def map_at_r(evaluation):
    """MAP@R (Musgrave et al. 2020): per query with R = class size - 1 > 0 other same-class rows,
    (1/R) sum_{i<=R} precision@i * [i-th retrieved is same-class]; queries with R = 0 are left out."""
    r = evaluation.positives
    return _mean_over(evaluation.ranks().precision_sum(r) / np.maximum(r, 1), r > 0)


@register(r"r_precision", "r_precision", needs=_needs_r, ranking=True)
def r_precision(evaluation):
    """Share of same-class rows among the R retrieved, R = class size - 1; queries with R = 0 left out."""
    r = evaluation.positives
    return _mean_over(evaluation.ranks().count_below(r) / np.maximum(r, 1), r > 0)


@register(r"map", "map", needs=lambda evaluation: {"full": 1})
def mean_average_precision(evaluation):
    """Average precision over the whole ranking of the N - 1 others, normalised by R = class size - 1;
    queries with R = 0 left out."""
    r = evaluation.positives
    return _mean_over(evaluation.full_ranks.precision_sum(np.inf) / np.maximum(r, 1), r > 0)


@register(r"mAP_c", "mAP_c", needs=lambda evaluation: {"euclidean": int(evaluation.class_sizes.max())}, ranking=True)
def map_c(evaluation):
    """Revisiting-DML's mAP_c: average precision over the n_c nearest, normalised by the class size
    n_c (the query included, as there), averaged over all queries."""
    sizes = evaluation.class_sizes
    return np.mean(evaluation.ranks().precision_sum(sizes) / sizes)


@register(r"mAP_(?P<k>[1-9]\d*)", "mAP_K (e.g. mAP_1000)", needs=lambda evaluation, k: {"euclidean": k}, ranking=True)
def map_at_k(evaluation, k):
    """Revisiting-DML's mAP_1000 for any K: average precision over the K nearest, normalised by
    the class size n_c (the query included, as there), averaged over all queries."""
    return np.mean(evaluation.ranks().precision_sum(k) / evaluation.class_sizes)


def _needs_votes(evaluation, top, k):
    return {"euclidean": k or DEFAULT_VOTES}


@register(r"knn_top(?P<top>[1-9]\d*)(?:@(?P<k>[1-9]\d*))?", "knn_top1, knn_top5 (knn_topM@K: K voters)",
          needs=_needs_votes, ranking=True)
def knn_accuracy(evaluation, top, k):
    """Top-`top` accuracy of a majority vote of the k nearest gallery rows (default DEFAULT_VOTES)."""
    predictions = majority_vote(evaluation.vote_labels(k or DEFAULT_VOTES), top)
    return np.mean((predictions == evaluation.labels[:, None]).any(1))


@register(r"nmi", "nmi", needs=lambda evaluation: {"kmeans": 1})
def nmi(evaluation):
    """NMI of k-means (one cluster per class of the evaluated set) against the classes."""
    # imported here, as scipy.stats below: scikit-learn and scipy.stats take most of a second to
    # import, which every command's --help would wait for
    from sklearn.metrics import normalized_mutual_info_score

    return normalized_mutual_info_score(evaluation.labels, evaluation.clusters)


@register(r"f1", "f1", needs=lambda evaluation: {"kmeans": 1})
def clustering_f1(evaluation):
    """Pair-counting F1 of the same k-means (Revisiting-DML's f1): precision = same-class share of
    the pairs in one cluster, recall = share of same-class pairs that share a cluster."""
    _, pair_counts = np.unique(np.stack([evaluation.labels, evaluation.clusters]), axis=1, return_counts=True)
    together = _pairs(pair_counts)
    if together == 0:
        return 0.0
    precision = together / _pairs(np.bincount(evaluation.clusters))
    recall = together / _pairs(np.bincount(evaluation.labels))
    return 2 * precision * recall / (precision + recall)


def _pairs(counts):
    counts = np.asarray(counts, dtype=np.float64)
    return float(np.sum(counts * (counts - 1) / 2))


@register(r"dists@(?P<mode>intra|inter|intra_over_inter)", "dists@intra, dists@inter, dists@intra_over_inter",
          bounds=lambda mode: (0.0, math.inf if mode == "intra_over_inter" else 2.0))  # a cosine distance: 0 to 2
def distances(evaluation, mode):
    """Revisiting-DML's dists: intra = mean over classes of the mean cosine distance between two
    different members (a class of one takes the largest value of the others); inter = mean cosine
    distance between two different classes' (normalised) mean embeddings."""
    if mode == "intra_over_inter":
        return distances(evaluation, "intra") / max(distances(evaluation, "inter"), 1e-8)
    labels = evaluation.labels
    if mode == "intra":
        unit = _l2_normalised(evaluation.features).astype(np.float64)
        sums = np.zeros((labels.max() + 1, unit.shape[1]))
        np.add.at(sums, labels, unit)
        sizes = np.bincount(labels).astype(np.float64)
        self_similarity = np.bincount(labels, weights=np.square(unit).sum(1))
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = 1 - (np.square(sums).sum(1) - self_similarity) / (sizes * (sizes - 1))
        per_class = per_class[sizes > 0]
        defined = np.isfinite(per_class)
        if not defined.any():
            return math.nan
        per_class[~defined] = per_class[defined].max()
        return np.mean(per_class)
    centres = np.zeros((labels.max() + 1, evaluation.features.shape[1]))
    np.add.at(centres, labels, evaluation.features.astype(np.float64))
    centres = _l2_normalised(centres[np.bincount(labels) > 0])
    n = len(centres)
    if n < 2:
        return math.nan
    return 1 - (np.square(centres.sum(0)).sum() - np.square(centres).sum()) / (n * (n - 1))


@register(r"rho_spectrum@(?P<k>-?[1-9]\d*)", "rho_spectrum@K (K != 0)", bounds=lambda k: (0.0, math.inf))
def rho_spectrum(evaluation, k):
    """Revisiting-DML's spectral decay: singular values s of the (uncentred) embeddings, the first
    |K| - 1 dropped, normalised to sum 1; KL(uniform || s) for K > 0, KL(s || uniform) for K < 0.
    All min(N, D) singular values are used (Revisiting's CPU path drops the smallest one, an
    artefact of TruncatedSVD, its GPU path does not)."""
    singular_values = np.linalg.svd(evaluation.features.astype(np.float64), compute_uv=False)[abs(k) - 1:]
    spectrum = singular_values / singular_values.sum()
    uniform = np.full(len(spectrum), 1 / len(spectrum))
    from scipy.stats import entropy

    return entropy(uniform, spectrum) if k > 0 else entropy(spectrum, uniform)


def _l2_normalised(features):
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def _kmeans(features, n_clusters, seed):
    kmeans = faiss.Kmeans(features.shape[1], n_clusters, niter=20, seed=seed,
                          min_points_per_centroid=1, max_points_per_centroid=10**6)
    kmeans.train(features)
    _, assignment = kmeans.index.search(features, 1)
    return assignment[:, 0]
