"""Affinity graphs on a batch of teacher embeddings, as transition matrices without self loops.

softmax:   P = row_softmax((T - inf I) / tau), optionally over each row's kNN only
           (the released code's graph; row-stochastic).
symmetric: A = max(T, 0)^gamma with zero diagonal, optionally kept on the kNN only,
           P = D^-1/2 A D^-1/2 with D = diag(A 1) (the classic diffusion graph of Zhou et al.
           2004 / Iscen et al. 2017; symmetric, spectral radius <= 1).

With k set, the graph keeps each row's k most similar other samples, then is made symmetric:
"symmetric" keeps an edge when either end chose it, "mutual" only when both did. Such a graph
is built and returned as a sparse CSR tensor, O(B k) memory; a dense graph as a dense tensor.
"""
import warnings

import torch

NORMALISATIONS = ("softmax", "symmetric")
KNN_MODES = ("symmetric", "mutual")

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


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


def transition_matrix(similarities, norm="softmax", tau=1.0, gamma=3.0, k=None, knn="symmetric"):
    """The transition matrix P of the teacher graph (see the module docstring)."""
    if norm not in NORMALISATIONS:
        raise ValueError(f"unknown graph normalisation {norm!r}; use one of {', '.join(NORMALISATIONS)}")
    if k is None:
        return _dense_transition(similarities, norm, tau, gamma)
    rows, cols = knn_edges(similarities, k, knn)
    return sparse_transition(rows, cols, similarities[rows, cols], len(similarities), norm, tau, gamma)


def sparse_transition(rows, cols, edge_similarities, size, norm="symmetric", tau=1.0, gamma=3.0):
    """CSR transition matrix of a graph given as sorted (rows, cols) edges and their similarities."""
    if norm == "softmax":
        logits = edge_similarities / tau
        row_max = torch.full((size,), float("-inf"), dtype=logits.dtype, device=logits.device)
        row_max = row_max.scatter_reduce(0, rows, logits, reduce="amax")
        weights = (logits - row_max[rows]).exp()
        values = weights / _row_sums(weights, rows, size)[rows]
    else:
        affinity = edge_similarities.clamp_min(0).pow(gamma)
        inverse_sqrt_degree = _row_sums(affinity, rows, size).clamp_min(1e-12).rsqrt()
        values = inverse_sqrt_degree[rows] * affinity * inverse_sqrt_degree[cols]
    row_starts = torch.zeros(size + 1, dtype=torch.int64, device=rows.device)
    row_starts[1:] = torch.bincount(rows, minlength=size).cumsum(0)
    return torch.sparse_csr_tensor(row_starts, cols, values, (size, size), check_invariants=False)


def _row_sums(values, rows, size):
    return torch.zeros(size, dtype=values.dtype, device=values.device).index_add_(0, rows, values)


def _dense_transition(similarities, norm, tau, gamma):
    no_self = torch.eye(len(similarities), dtype=torch.bool, device=similarities.device)
    if norm == "softmax":
        return torch.softmax(similarities.masked_fill(no_self, float("-inf")) / tau, dim=1)
    affinity = similarities.clamp_min(0).pow(gamma).masked_fill(no_self, 0.0)
    inverse_sqrt_degree = affinity.sum(dim=1).clamp_min(1e-12).rsqrt()
    return inverse_sqrt_degree[:, None] * affinity * inverse_sqrt_degree[None, :]
