import torch

from diffusion.settings import Settings


def at_least_float32(tensor):
    """float16/bfloat16 upcast to float32 (softmax and the solve need it); float64 stays float64."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


@torch.no_grad()
def soft_targets(teacher_embeddings, kd_tau=1.0, diffusion: Settings | None = None):
    """The self-distillation target of a teacher batch G (B x D), rows summing to 1.

    q = row_softmax(G G^T / kd_tau) is the PSD target (diagonal kept). With `diffusion` (and its
    w > 0) it is diffused (OBDP): Q = (1 - w) (I - w P)^-1 q, P the transition matrix of the
    teacher's affinity graph and the system solved as the Settings say (diffusion/graphs.py,
    diffusion/propagation.py). Computed in at least float32 whatever the input dtype; no gradient
    flows into the result.
    """
    embeddings = at_least_float32(teacher_embeddings.detach())
    similarities = embeddings @ embeddings.T
    diffused = diffusion is not None and diffusion.w > 0
    graph = diffusion.affinity(similarities) if diffused else None
    targets = _row_softmax_(similarities.div_(kd_tau))  # the similarities are not needed any more
    if graph is None:
        return targets
    result = diffusion.diffuse(graph, targets)
    # Rows sum to 1 in exact arithmetic only for the softmax graph; the symmetric graph and
    # round-off need the renormalisation (negatives clamped so the KL stays finite).
    result = result.clamp_min_(0)
    return result.div_(result.sum(dim=1, keepdim=True).clamp_min_(torch.finfo(result.dtype).tiny))


@torch.no_grad()
def memory_soft_targets(node_embeddings, batch_nodes, kd_tau, diffusion: Settings, edges=None):
    """The OBDP target of a batch diffused over the graph of a larger node set V (the batch and a
    cross-batch memory, docs/method.md): each node's distribution over the batch,
    X = row_softmax(G_V G_b^T / kd_tau) (|V| x B), diffused as (1 - w)(I - w P)^-1 X over the graph P
    of V, the batch's rows (`batch_nodes`, their positions in V) kept. `edges` (rows, cols), symmetric
    and sorted, give a sparse graph at O(|edges|) cost; without them the graph is built from all of
    G_V G_V^T as `diffusion` says. With V the batch itself and no edges this is soft_targets exactly.
    """
    nodes = at_least_float32(node_embeddings.detach())
    batch = nodes[batch_nodes]
    spread = _row_softmax_((nodes @ batch.T).div_(kd_tau))
    if edges is None:
        graph = diffusion.affinity(nodes @ nodes.T)
    else:
        rows, cols = edges
        graph = diffusion.graph_from_edges(rows, cols, (nodes[rows] * nodes[cols]).sum(dim=1), len(nodes))
    result = diffusion.diffuse(graph, spread)[batch_nodes].clamp_min_(0)
    return result.div_(result.sum(dim=1, keepdim=True).clamp_min_(torch.finfo(result.dtype).tiny))


def _row_softmax_(logits):
    """Row softmax in place: B x B batches are large enough that a fresh allocation costs more than the arithmetic."""
    logits.sub_(logits.amax(dim=1, keepdim=True)).exp_()
    return logits.div_(logits.sum(dim=1, keepdim=True))
