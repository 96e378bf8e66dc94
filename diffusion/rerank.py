"""Test-time diffusion re-ranking (manifold ranking: Zhou et al. 2004, Iscen et al. CVPR 2017).

Every item of the evaluated set is a query against all the others. The graph is the
symmetric-normalised kNN graph A = max(cos, 0)^gamma of all items (diffusion/graphs.py); the
diffusion scores of query q are f = (1 - w) (I - w P)^-1 e_q, solved by conjugate gradient for a
chunk of queries at a time, so memory stays O(N chunk + N graph_k). Each query's shortlist (its
nearest neighbours by the embedding) is re-ordered by f, ties keeping the embedding's order.
"""
import torch

from diffusion.graphs import edges_from_neighbours, sparse_graph
from diffusion.propagation import conjugate_gradient, initial_guess

QUERY_CHUNK = 1024


@torch.no_grad()
def rerank(features, shortlist, k, *, graph_k=20, graph="mutual", w=0.99, gamma=3.0, tol=1e-6, max_iters=100):
    """N x k neighbour indices, nearest first: `shortlist` (N x K, nearest first, self excluded,
    K >= k) re-ordered by diffusion score. `graph_k` of its columns define the graph."""
    embeddings = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
    shortlist = torch.as_tensor(shortlist, dtype=torch.int64)
    size = len(embeddings)
    rows, cols = edges_from_neighbours(shortlist[:, :graph_k], graph)
    edge_similarities = (embeddings[rows] * embeddings[cols]).sum(dim=1)
    graph = sparse_graph(rows, cols, edge_similarities, size, norm="symmetric", gamma=gamma)
    reranked = torch.empty(size, k, dtype=torch.int64)
    for start in range(0, size, QUERY_CHUNK):
        queries = torch.arange(start, min(start + QUERY_CHUNK, size))
        indicator = torch.zeros(size, len(queries))
        indicator[queries, torch.arange(len(queries))] = 1.0
        scores, _ = conjugate_gradient(graph.transition, indicator, w, tol, max_iters,
                                       initial_guess(indicator, w, graph.right, graph.left))
        candidates = shortlist[queries]
        candidate_scores = scores.T.gather(1, candidates)
        order = torch.sort(candidate_scores, dim=1, descending=True, stable=True).indices
        reranked[queries] = candidates.gather(1, order)[:, :k]
    return reranked.numpy()
