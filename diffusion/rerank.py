"""Test-time diffusion re-ranking (manifold ranking: Zhou et al. 2004, Iscen et al. CVPR 2017).

Every item of the evaluated set is a query against all the others. The graph is the kNN graph of
all items, its k neighbours taken from each item's shortlist, under the settings' normalisation
(the re-ranking's default: symmetric, A = max(cos, 0)^gamma, mutual edges; diffusion/graphs.py).
The diffusion scores of query q are f = (1 - w) (I - w P)^-1 e_q, solved by the settings' iterative
solver for a chunk of queries at a time, so memory stays O(N chunk + N k). Each query's shortlist
(its nearest neighbours by the embedding) is re-ordered by f, ties keeping the embedding's order.
"""
import torch

from diffusion.graphs import edges_from_neighbours
from diffusion.propagation import SOLVERS
from diffusion.settings import Settings
from errors import SettingError

QUERY_CHUNK = 1024


def rerank_settings(**changes):
    """The re-ranking's defaults, with `changes`: the symmetric graph on mutual 20-NN edges (Iscen
    et al.), solved by conjugate gradient to 1e-6 in at most 100 steps, w 0.99."""
    return Settings(**{"w": 0.99, "norm": "symmetric", "k": 20, "knn": "mutual", "solver": "cg",
                       "options": {"iters": 100}, **changes})


def check(settings: Settings):
    """SettingError unless the settings can re-rank a large set: a kNN graph and an iterative solver."""
    if settings.k is None:
        raise SettingError("the re-ranking needs a kNN graph: set k", ["k"])
    if not SOLVERS.get(settings.solver).iterative:
        iterative = " or ".join(name for name, entry in SOLVERS.items() if entry.iterative)
        raise SettingError(f"the re-ranking solves iteratively: solver {iterative}, not {settings.solver}", ["solver"])


@torch.no_grad()
def rerank(features, shortlist, k, settings: Settings | None = None):
    """N x k neighbour indices, nearest first: `shortlist` (N x K, nearest first, self excluded,
    K >= k) re-ordered by diffusion score. settings.k of its columns define the graph (default:
    rerank_settings())."""
    settings = settings or rerank_settings()
    check(settings)
    embeddings = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
    shortlist = torch.as_tensor(shortlist, dtype=torch.int64)
    size = len(embeddings)
    rows, cols = edges_from_neighbours(shortlist[:, :settings.k], settings.knn)
    edge_similarities = (embeddings[rows] * embeddings[cols]).sum(dim=1)
    graph = settings.graph_from_edges(rows, cols, edge_similarities, size)
    reranked = torch.empty(size, k, dtype=torch.int64)
    for start in range(0, size, QUERY_CHUNK):
        queries = torch.arange(start, min(start + QUERY_CHUNK, size))
        indicator = torch.zeros(size, len(queries))
        indicator[queries, torch.arange(len(queries))] = 1.0
        scores = settings.diffuse(graph, indicator)
        candidates = shortlist[queries]
        candidate_scores = scores.T.gather(1, candidates)
        order = torch.sort(candidate_scores, dim=1, descending=True, stable=True).indices
        reranked[queries] = candidates.gather(1, order)[:, :k]
    return reranked.numpy()
