"""Solvers of the diffusion (I - w P) X = (1 - w) Y, for dense or sparse CSR P and B x C targets Y.

solve:     direct linear solve (dense; a sparse P is densified), O(B^3).
iterative: X <- w P X + (1 - w) Y from X = Y, until the largest change is below tol or after
           max_iters steps; converges at rate w for a P of spectral radius <= 1. O(nnz C) a step.
cg:        conjugate gradient, all C columns at once; needs a symmetric P (symmetric normalisation),
           for which I - w P is positive definite. O(nnz C) a step, about sqrt((1+w)/(1-w)) times
           fewer steps than the iteration.
"""
import torch

SOLVERS = ("solve", "iterative", "cg")


def diffuse(transition, targets, w, solver="solve", tol=1e-6, max_iters=1000):
    """(1 - w) (I - w P)^-1 Y by the chosen solver."""
    if solver == "solve":
        return solve(transition, targets, w)
    if solver == "iterative":
        return iterate(transition, targets, w, tol, max_iters)[0]
    if solver == "cg":
        return conjugate_gradient(transition, targets, w, tol, max_iters)[0]
    raise ValueError(f"unknown diffusion solver {solver!r}; use one of {', '.join(SOLVERS)}")


def solve(transition, targets, w):
    dense = transition.to_dense() if transition.layout != torch.strided else transition
    system = torch.eye(len(dense), dtype=dense.dtype, device=dense.device) - w * dense
    return (1 - w) * torch.linalg.solve(system, targets)


def iterate(transition, targets, w, tol=1e-6, max_iters=1000):
    """The fixed-point iteration; returns the result and the number of steps taken."""
    source = (1 - w) * targets
    current = targets.clone()  # each old iterate is overwritten by its change below
    step_with = torch.sparse.addmm if transition.layout != torch.strided else torch.addmm
    for step in range(1, max_iters + 1):
        following = step_with(source, transition, current, alpha=w)
        change = torch.linalg.vector_norm(current.sub_(following), ord=float("inf"))
        current = following
        if change < tol:
            break
    return current, step


def conjugate_gradient(transition, targets, w, tol=1e-6, max_iters=1000):
    """CG on (I - w P) X = (1 - w) Y, column by column in parallel; returns X and the step count.

    Stops when every column's residual norm is below tol times its right-hand side's norm.
    """
    def apply(x):
        return x - w * (transition @ x)

    rhs = (1 - w) * targets
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    residual_sq = (residual * residual).sum(dim=0)
    threshold = (tol * rhs.norm(dim=0)).pow(2)
    step = 0
    for step in range(1, max_iters + 1):
        applied = apply(direction)
        alpha = residual_sq / (direction * applied).sum(dim=0).clamp_min(torch.finfo(rhs.dtype).tiny)
        solution = solution + alpha * direction
        residual = residual - alpha * applied
        new_residual_sq = (residual * residual).sum(dim=0)
        if bool((new_residual_sq <= threshold).all()):
            break
        direction = residual + (new_residual_sq / residual_sq.clamp_min(torch.finfo(rhs.dtype).tiny)) * direction
        residual_sq = new_residual_sq
    return solution, step
