"""Soft targets for self-distillation: the teacher's similarity distribution, optionally
diffused over an affinity graph of the batch (OBDP, Zeng et al. 2024; the formulas are in
docs/method.md), and the same diffusion as a test-time re-ranking of retrieval results."""
from diffusion.graphs import KNN_MODES, NORMALISATIONS, Graph, affinity_graph
from diffusion.propagation import SOLVERS, diffuse
from diffusion.rerank import rerank
from diffusion.soft_targets import at_least_float32, check_options, soft_targets

__all__ = ["KNN_MODES", "NORMALISATIONS", "SOLVERS", "Graph", "affinity_graph", "at_least_float32", "diffuse", "rerank",
           "check_options", "soft_targets"]
