"""Exact k-nearest-neighbour search by euclidean distance, in chunks of queries.

Memory stays O(N k) plus one bounded block of distances, whatever N. On CPU the search is
faiss's IndexFlatL2. With a CUDA device it is faiss-gpu when installed (k <= 2048), else
torch matmul + topk. Two rules hold on every path:
- with `exclude_self`, a query is never its own neighbour, even among exact duplicates;
- among equal distances the lower gallery index comes first (faiss-gpu: within the
  returned list; which of several items tied at the k-th distance makes the list is then
  faiss-gpu's choice).
"""
import faiss
import numpy as np
import torch

import diffusion

QUERY_CHUNK = 4096
BLOCK_BYTES = 2**28  # one block of float32 distances on the torch path
FAISS_GPU_MAX_K = 2048


def nearest_neighbours(features, k, device=None):
    """Indices (N x k) of each row's k nearest other rows, nearest first; k is clipped to N - 1."""
    return search(features, features, k, exclude_self=True, device=device)


def search(queries, gallery, k, exclude_self=False, device=None, exclude=None):
    """Indices (len(queries) x k) of each query's k nearest gallery rows, nearest first.

    `exclude`: per query, the gallery row that is the query itself (never returned), or -1;
    `exclude_self` says that queries and gallery are the same rows (exclude = 0, 1, 2, ...).
    k is clipped to the number of gallery rows left. `device`: "cpu", "cuda[:i]" or None
    (the current CUDA device when there is one, else the CPU).
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    if exclude_self:
        exclude = np.arange(len(queries))
    excluding = exclude is not None and bool(np.any(np.asarray(exclude) >= 0))
    exclude = np.asarray(exclude, dtype=np.int64) if excluding else None
    k = max(0, min(k, len(gallery) - int(excluding)))
    if k == 0:
        return np.empty((len(queries), 0), dtype=np.int64)
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        return _faiss_search(faiss.IndexFlatL2(gallery.shape[1]), queries, gallery, k, exclude)
    if _faiss_has_gpu() and k + excluding <= FAISS_GPU_MAX_K:
        resources = faiss.StandardGpuResources()  # must outlive the index
        index = faiss.index_cpu_to_gpu(resources, device.index or 0, faiss.IndexFlatL2(gallery.shape[1]))
        return _faiss_search(index, queries, gallery, k, exclude, order_ties=True)
    return torch_search(queries, gallery, k, device=device, exclude=exclude)


def _faiss_has_gpu():
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _faiss_search(index, queries, gallery, k, exclude=None, order_ties=False):
    index.add(gallery)
    neighbours = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), QUERY_CHUNK):
        rows = np.arange(start, min(start + QUERY_CHUNK, len(queries)))
        distances, found = index.search(queries[rows], k + int(exclude is not None))
        if order_ties:
            order = np.lexsort((found, distances), axis=1)
            found = np.take_along_axis(found, order, axis=1)
        if exclude is not None:
            # A stable sort moves the query to the end of its row wherever the search put it.
            order = np.argsort(found == exclude[rows, None], axis=1, kind="stable")
            found = np.take_along_axis(found, order, axis=1)
        neighbours[rows] = found[:, :k]
    return neighbours


def torch_search(queries, gallery, k, exclude_self=False, device="cpu", exclude=None):
    """`search` by torch matmul + topk on `device`, in blocks of at most BLOCK_BYTES of distances."""
    device = torch.device(device)
    if exclude_self:
        exclude = np.arange(len(queries))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    gallery_t = torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32)).to(device)
    gallery_norms = gallery_t.square().sum(1)
    chunk = max(1, min(QUERY_CHUNK, BLOCK_BYTES // (4 * len(gallery_t))))
    neighbours = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        stop = min(start + chunk, len(queries))
        distances = squared_distances(torch.from_numpy(queries[start:stop]).to(device), gallery_t, gallery_norms)
        if exclude is not None:
            _exclude(distances, exclude[start:stop])
        neighbours[start:stop] = smallest(distances, k).cpu().numpy()
    return neighbours


def _exclude(distances, excluded):
    """Each row's excluded gallery column (>= 0) set to +inf, in place."""
    rows = np.flatnonzero(excluded >= 0)
    if len(rows):
        distances[torch.from_numpy(rows).to(distances.device),
                  torch.from_numpy(excluded[rows]).to(distances.device)] = float("inf")


def squared_distances(queries, gallery, gallery_norms):
    """||q||^2 + ||g||^2 - 2 q.g clipped at 0, as faiss computes it."""
    distances = torch.addmm(gallery_norms[None], queries, gallery.T, alpha=-2)
    distances += queries.square().sum(1, keepdim=True)
    return distances.clamp_(min=0)


def smallest(distances, k):
    """Column indices of each row's k smallest values, ordered by (value, index)."""
    values, indices = torch.topk(distances, k, dim=1, largest=False, sorted=True)
    # topk picks arbitrarily among values tied at the k-th place; such rows take the lowest indices.
    threshold = values[:, -1:]
    ambiguous = ((distances == threshold).sum(1) > (values == threshold).sum(1)).nonzero()[:, 0]
    if len(ambiguous):
        rows, cut = distances[ambiguous], threshold[ambiguous]
        below, tied = rows < cut, rows == cut
        room = k - below.sum(1, keepdim=True)
        chosen = below | (tied & (tied.cumsum(1) <= room))
        indices[ambiguous] = chosen.nonzero()[:, 1].view(len(ambiguous), k)
        values[ambiguous] = rows.gather(1, indices[ambiguous])
    indices, order = indices.sort(dim=1)
    values = values.gather(1, order)
    order = values.sort(dim=1, stable=True).indices
    return indices.gather(1, order)


def full_ranking_positive_ranks(features, labels, device=None, gallery=None):
    """(query, rank): for each query row, the 0-based ranks of its same-label gallery rows in its
    ranking of the whole gallery (by distance, ties by lower index), the query itself left out,
    sorted by query then rank. The gallery is `gallery` = (features, labels, exclude), exclude
    giving each query's own gallery row or -1; by default the rows themselves.

    Exact, in blocks of queries: O(N M log M) time, memory O(N + M + number of positive pairs).
    """
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    queries_t = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device)
    labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    if gallery is None:
        gallery_t, gallery_labels_t, exclude = queries_t, labels_t, np.arange(len(queries_t))
    else:
        gallery_t = torch.from_numpy(np.ascontiguousarray(gallery[0], dtype=np.float32)).to(device)
        gallery_labels_t = torch.from_numpy(np.asarray(gallery[1], dtype=np.int64)).to(device)
        exclude = np.asarray(gallery[2], dtype=np.int64)
    norms = gallery_t.square().sum(1)
    # distances, sorted values and indices, gathered labels: about 32 bytes per entry
    chunk = max(1, min(QUERY_CHUNK, BLOCK_BYTES // (32 * len(gallery_t))))
    queries, ranks = [], []
    for start in range(0, len(queries_t), chunk):
        stop = min(start + chunk, len(queries_t))
        rows = torch.arange(start, stop, device=device)
        distances = squared_distances(queries_t[start:stop], gallery_t, norms)
        _exclude(distances, exclude[start:stop])
        order = torch.sort(distances, dim=1, stable=True).indices
        own = torch.from_numpy(exclude[start:stop]).to(device)
        positive = (gallery_labels_t[order] == labels_t[rows, None]) & (order != own[:, None])
        query, rank = positive.nonzero(as_tuple=True)
        queries.append((query + start).cpu().numpy())
        ranks.append(rank.cpu().numpy())
    return np.concatenate(queries), np.concatenate(ranks)


def diffusion_reranked(settings=None, shortlist=100):
    """A `neighbours` function for evaluation.compute: each query's exact nearest neighbours (at
    least `shortlist` of them) re-ordered by diffusion over the kNN graph of the evaluated set as
    `settings` (a diffusion.Settings; default: the mutual 20-NN symmetric graph of Iscen et al. 2017)
    say (diffusion.rerank)."""
    settings = settings or diffusion.rerank_settings()

    def reranked(features, k):
        candidates = nearest_neighbours(features, max(k, shortlist))
        return diffusion.rerank(features, candidates, k, settings)

    return reranked
