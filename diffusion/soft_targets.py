import torch

from diffusion.graphs import affinity_graph
from diffusion.propagation import diffuse


def check_options(norm, solver):
    """ValueError for a solver the graph cannot take: conjugate gradient needs a symmetric matrix."""
    if solver == "cg" and norm != "symmetric":
        raise ValueError("solver cg needs a symmetric graph: norm symmetric")


def at_least_float32(tensor):
    """float16/bfloat16 upcast to float32 (softmax and the solve need it); float64 stays float64."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


@torch.no_grad()
def soft_targets(teacher_embeddings, kd_tau=1.0, w=0.99, diffusion_tau=1.0, *, norm="softmax", k=None,
                 knn="symmetric", gamma=3.0, solver="solve", tol=1e-6, max_iters=1000):
    """The self-distillation target of a teacher batch G (B x D), rows summing to 1.

    q = row_softmax(G G^T / kd_tau) is the PSD target (diagonal kept). With w > 0 it is
    diffused (OBDP): Q = (1 - w) (I - w P)^-1 q, P the transition matrix of the teacher's
    affinity graph (diffusion/graphs.py: norm, k, knn, gamma, diffusion_tau) and the system
    solved by `solver` (diffusion/propagation.py). The defaults are the released code's: a dense
    softmax graph and a direct solve. Computed in at least float32 whatever the input dtype; no
    gradient flows into the result.
    """
    check_options(norm, solver)
    embeddings = at_least_float32(teacher_embeddings.detach())
    similarities = embeddings @ embeddings.T
    graph = None if w == 0 else affinity_graph(similarities, norm=norm, tau=diffusion_tau, gamma=gamma, k=k, knn=knn)
    targets = _row_softmax_(similarities.div_(kd_tau))  # the similarities are not needed any more
    if graph is None:
        return targets
    diffused = diffuse(graph.transition, targets, w, solver=solver, tol=tol, max_iters=max_iters,
                       invariant=(graph.right, graph.left))
    # Rows sum to 1 in exact arithmetic only for the softmax graph; the symmetric graph and
    # round-off need the renormalisation (negatives clamped so the KL stays finite).
    diffused = diffused.clamp_min_(0)
    return diffused.div_(diffused.sum(dim=1, keepdim=True).clamp_min_(torch.finfo(diffused.dtype).tiny))


def _row_softmax_(logits):
    """Row softmax in place: B x B batches are large enough that a fresh allocation costs more than the arithmetic."""
    logits.sub_(logits.amax(dim=1, keepdim=True)).exp_()
    return logits.div_(logits.sum(dim=1, keepdim=True))
