"""Soft targets for self-distillation: the teacher's similarity distribution, optionally
diffused over an affinity graph of the batch (OBDP, Zeng et al. 2024; the formulas are in
docs/method.md), and the same diffusion as a test-time re-ranking of retrieval results.

The graphs (GRAPHS) and the solvers (SOLVERS) are registered by name; diffusion.Settings picks
one of each with their parameters. docs/extending.md shows how to add either.
"""
from diffusion.graphs import GRAPHS, KNN_MODES, Graph, GraphNormalisation, affinity_graph
from diffusion.propagation import SOLVERS, Solver
from diffusion.rerank import check as rerank_check
from diffusion.rerank import rerank, rerank_settings
from diffusion.settings import Settings, parameters
from diffusion.soft_targets import at_least_float32, memory_soft_targets, soft_targets

__all__ = ["GRAPHS", "KNN_MODES", "SOLVERS", "Graph", "GraphNormalisation", "Settings", "Solver", "affinity_graph",
           "at_least_float32", "memory_soft_targets", "parameters", "rerank", "rerank_check", "rerank_settings",
           "soft_targets"]
