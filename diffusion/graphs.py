"""Affinity graphs on a batch of teacher embeddings, as transition matrices without self loops,
by name (`GRAPHS`, the `norm` of diffusion.Settings):

softmax:   P = row_softmax((T - inf I) / tau), optionally over each row's kNN only
           (the released code's graph; row-stochastic).
symmetric: A = max(T, 0)^gamma with zero diagonal, optionally kept on the kNN only,
           P = D^-1/2 A D^-1/2 with D = diag(A 1) (the classic diffusion graph of Zhou et al.
           2004 / Iscen et al. 2017; symmetric, spectral radius <= 1).

A graph's constructor defaults are its parameters (tau, gamma): each becomes a setting of
diffusion.Settings and a --diffusion_<name> flag, as a loss's become --loss_<loss>_<name> flags.

With k set, the graph keeps each row's k most similar other samples, then is made symmetric:
"symmetric" keeps an edge when either end chose it, "mutual" only when both did. Such a graph
is built and returned as a sparse CSR tensor, O(B k) memory; a dense graph as a dense tensor.

Every graph comes with its invariant pair (right, left): P right = right, left^T P = left^T,
left . right = 1. The diffusion leaves the component right (left^T Y) of a signal Y unchanged, so
an iterative solver can start exactly right on it (diffusion/propagation.py). Because the edge set
and the similarities are symmetric, both are known in closed form: the softmax graph is the
reversible chain P = Z^-1 E with E symmetric, so right = 1 on the rows that have edges and left is
proportional to the row normalisers Z; the symmetric graph has right = left = sqrt(degree), normalised.
"""
import warnings
from typing import NamedTuple

import torch

from registry import Registry, keyword_defaults

KNN_MODES = ("symmetric", "mutual")
GRAPHS = Registry("diffusion graph")

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


class Graph(NamedTuple):
    transition: torch.Tensor  # B x B, dense or sparse CSR
    right: torch.Tensor  # B
    left: torch.Tensor  # B


class GraphNormalisation:
    """How similarities become a transition matrix: `dense(similarities)` for the full graph,
    `sparse(rows, cols, edge_similarities, size)` for a symmetric edge set (sorted by row, then
    column). `symmetric` says whether the transition matrix is symmetric, as the conjugate-gradient
    solver needs."""
    symmetric = False
    parameters = {}  # filled from the constructor's defaults

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.parameters = keyword_defaults(cls)

    def dense(self, similarities) -> Graph:
        raise NotImplementedError

    def sparse(self, rows, cols, edge_similarities, size) -> Graph:
        raise NotImplementedError


@GRAPHS.register("softmax")
class SoftmaxGraph(GraphNormalisation):
    """P = row_softmax((T - inf I) / tau) over each row's edges."""

    def __init__(self, tau=1.0):
        self.tau = tau

    def dense(self, similarities):
        no_self = torch.eye(len(similarities), dtype=torch.bool, device=similarities.device)
        logits = similarities.masked_fill(no_self, float("-inf")).div_(self.tau)
        log_normalisers = torch.logsumexp(logits, dim=1)
        transition = torch.exp_(logits.sub_(log_normalisers[:, None]))
        return Graph(transition, *_softmax_invariant(log_normalisers))

    def sparse(self, rows, cols, edge_similarities, size):
        logits = edge_similarities / self.tau
        row_max = torch.full((size,), float("-inf"), dtype=logits.dtype, device=logits.device)
        row_max = row_max.scatter_reduce(0, rows, logits, reduce="amax")
        weights = (logits - row_max[rows]).exp()
        row_sums = _row_sums(weights, rows, size)
        values = weights / row_sums[rows]
        return Graph(csr_matrix(rows, cols, values, size), *_softmax_invariant(row_max + row_sums.log()))


@GRAPHS.register("symmetric")
class SymmetricGraph(GraphNormalisation):
    """P = D^-1/2 A D^-1/2 with A = max(T, 0)^gamma on the edges."""
    symmetric = True

    def __init__(self, gamma=3.0):
        self.gamma = gamma

    def dense(self, similarities):
        no_self = torch.eye(len(similarities), dtype=torch.bool, device=similarities.device)
        affinity = similarities.clamp_min(0).pow(self.gamma).masked_fill(no_self, 0.0)
        degree = affinity.sum(dim=1)
        inverse_sqrt_degree = degree.clamp_min(1e-12).rsqrt()
        transition = inverse_sqrt_degree[:, None] * affinity * inverse_sqrt_degree[None, :]
        unit = _unit(degree.sqrt())
        return Graph(transition, unit, unit)

    def sparse(self, rows, cols, edge_similarities, size):
        affinity = edge_similarities.clamp_min(0).pow(self.gamma)
        degree = _row_sums(affinity, rows, size)
        inverse_sqrt_degree = degree.clamp_min(1e-12).rsqrt()
        values = inverse_sqrt_degree[rows] * affinity * inverse_sqrt_degree[cols]
        unit = _unit(degree.sqrt())
        return Graph(csr_matrix(rows, cols, values, size), unit, unit)


def nearest_neighbours(similarities, k):
    """B x k indices of each row's k most similar other samples (k capped at B - 1).

    The row itself is dropped from its top k + 1 wherever a tie put it (without a B x B copy).
    """
    size = len(similarities)
    k = min(k, size - 1)
    candidates = similarities.topk(k + 1, dim=1).indices
    is_self = candidates == torch.arange(size, device=candidates.device)[:, None]
    order = torch.sort(is_self.to(torch.int8), dim=1, stable=True).indices
    return candidates.gather(1, order)[:, :k]


def knn_edges(similarities, k, mode="symmetric"):
    """(rows, cols) of the kNN graph's edges, sorted by row then column, without duplicates."""
    return edges_from_neighbours(nearest_neighbours(similarities, k), mode)


def edges_from_neighbours(neighbours, mode="symmetric"):
    """Edges of the graph where row i chose the samples neighbours[i], symmetrised by `mode`."""
    if mode not in KNN_MODES:
        raise ValueError(f"unknown kNN mode {mode!r}; use one of {', '.join(KNN_MODES)}")
    size = len(neighbours)
    rows = torch.arange(size, device=neighbours.device).repeat_interleave(neighbours.shape[1])
    chosen = rows * size + neighbours.flatten()  # edge (i, j) as the key i * B + j
    reverse = neighbours.flatten() * size + rows
    if mode == "symmetric":
        keys = torch.unique(torch.cat([chosen, reverse]))
    else:
        keys = torch.unique(chosen[torch.isin(reverse, chosen)])
    return keys // size, keys % size


def affinity_graph(similarities, graph=None, k=None, knn="symmetric"):
    """The Graph (transition matrix and invariant pair) of the teacher batch's `similarities` under
    `graph` (a GraphNormalisation; default: the softmax graph at tau 1), dense, or on the kNN edges
    when k is set."""
    graph = graph or SoftmaxGraph()
    if k is None:
        return graph.dense(similarities)
    rows, cols = knn_edges(similarities, k, knn)
    return graph.sparse(rows, cols, similarities[rows, cols], len(similarities))


def csr_matrix(rows, cols, values, size):
    """The size x size CSR tensor of the entries (rows, cols, values), sorted by row then column."""
    row_starts = torch.zeros(size + 1, dtype=torch.int64, device=rows.device)
    row_starts[1:] = torch.bincount(rows, minlength=size).cumsum(0)
    return torch.sparse_csr_tensor(row_starts, cols, values, (size, size), check_invariants=False)


def _row_sums(values, rows, size):
    return torch.zeros(size, dtype=values.dtype, device=values.device).index_add_(0, rows, values)


def _softmax_invariant(log_normalisers):
    """right = 1 on rows with edges (log Z finite), left = Z / sum Z; both zero for a graph without edges."""
    has_edges = torch.isfinite(log_normalisers)
    if not has_edges.any():
        zeros = torch.zeros_like(log_normalisers)
        return zeros, zeros
    return has_edges.to(log_normalisers.dtype), torch.softmax(log_normalisers, dim=0)


def _unit(vector):
    return vector / torch.linalg.vector_norm(vector).clamp_min(torch.finfo(vector.dtype).tiny)
