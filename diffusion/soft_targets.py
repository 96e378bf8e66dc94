import torch


def at_least_float32(tensor):
    """float16/bfloat16 upcast to float32 (softmax and the solve need it); float64 stays float64."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


@torch.no_grad()
def soft_targets(teacher_embeddings, kd_tau=1.0, w=0.99, diffusion_tau=1.0):
    """The self-distillation target of a teacher batch G (B x D), rows summing to 1.

    q = row_softmax(G G^T / kd_tau) is the PSD target (diagonal kept). With w > 0 it is
    diffused (OBDP): Q = (1 - w) (I - w P)^-1 q, where P = row_softmax((T - inf I) /
    diffusion_tau) is the transition matrix of the teacher's affinity graph without self
    loops, solved as a linear system rather than by an explicit inverse. Computed in at
    least float32 whatever the input dtype; no gradient flows into the result.
    """
    embeddings = at_least_float32(teacher_embeddings.detach())
    similarities = embeddings @ embeddings.T
    targets = torch.softmax(similarities / kd_tau, dim=1)
    if w == 0:
        return targets
    no_self_loops = torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    transition = torch.softmax(similarities.masked_fill(no_self_loops, float("-inf")) / diffusion_tau, dim=1)
    system = torch.eye(len(embeddings), dtype=embeddings.dtype, device=embeddings.device) - w * transition
    diffused = (1 - w) * torch.linalg.solve(system, targets)
    # Rows sum to 1 in exact arithmetic; clamp round-off negatives so the KL stays finite.
    diffused = diffused.clamp_min(0)
    return diffused / diffused.sum(dim=1, keepdim=True)
