"""Solvers of the diffusion (I - w P) X = (1 - w) Y, for dense or sparse CSR P and B x C targets Y,
by name (`SOLVERS`, the `solver` of diffusion.Settings):

solve:     direct linear solve (dense; a sparse P is densified), O(B^3).
iterative: X <- w P X + (1 - w) Y until the largest change is below tol or after `iters`
           steps; converges at rate w for a P of spectral radius <= 1. O(nnz C) a step.
cg:        conjugate gradient, all C columns at once; needs a symmetric P (symmetric normalisation),
           for which I - w P is positive definite. O(nnz C) a step, about sqrt((1+w)/(1-w)) times
           fewer steps than the iteration.

A solver's constructor defaults are its parameters (tol, iters), settings and flags as a graph's are.
Given the graph's invariant pair (P r = r, l^T P = l^T, l . r = 1; diffusion/graphs.py), the
iterative solvers start from `initial_guess`: exact on the component r l^T Y, which the diffusion
leaves unchanged, and first order on the rest. That component converges only at rate w (w = 0.99:
hundreds of steps); the rest at rate w |lambda_2|, a few steps on a well-connected batch graph.
"""
import torch

from registry import Registry, keyword_defaults

SOLVERS = Registry("diffusion solver", order=None)


class Solver:
    """solver(transition, targets, w, invariant=None) -> (1 - w) (I - w P)^-1 Y; `invariant` = (r, l)
    of P, if known. `needs_symmetric`: only for a symmetric P. `iterative`: it never forms a dense
    B x B matrix, so it serves graphs of any size."""
    needs_symmetric = False
    iterative = True
    parameters = {}  # filled from the constructor's defaults

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.parameters = keyword_defaults(cls)

    def __call__(self, transition, targets, w, invariant=None):
        raise NotImplementedError


@SOLVERS.register("solve")
class DirectSolve(Solver):
    iterative = False

    def __call__(self, transition, targets, w, invariant=None):
        return solve(transition, targets, w)


@SOLVERS.register("iterative")
class FixedPointIteration(Solver):
    def __init__(self, tol=1e-6, iters=1000):
        self.tol, self.iters = tol, iters

    def __call__(self, transition, targets, w, invariant=None):
        start = None if invariant is None else initial_guess(targets, w, *invariant)
        return iterate(transition, targets, w, self.tol, self.iters, start)[0]


@SOLVERS.register("cg")
class ConjugateGradient(Solver):
    needs_symmetric = True

    def __init__(self, tol=1e-6, iters=1000):
        self.tol, self.iters = tol, iters

    def __call__(self, transition, targets, w, invariant=None):
        start = None if invariant is None else initial_guess(targets, w, *invariant)
        return conjugate_gradient(transition, targets, w, self.tol, self.iters, start)[0]


def initial_guess(targets, w, right, left):
    """(1 - w) Y + w r (l^T Y): the exact solution r l^T Y on the invariant component plus the
    first term, (1 - w) (I - r l^T) Y, of the Neumann series on the rest."""
    return torch.addr(targets, right, left @ targets, beta=1 - w, alpha=w)


def solve(transition, targets, w):
    dense = transition.to_dense() if transition.layout != torch.strided else transition
    system = torch.eye(len(dense), dtype=dense.dtype, device=dense.device) - w * dense
    return (1 - w) * torch.linalg.solve(system, targets)


def iterate(transition, targets, w, tol=1e-6, max_iters=1000, start=None):
    """The fixed-point iteration from `start` (default Y; overwritten); returns the result and the
    number of steps.

    Two B x C buffers, reused: every step writes the new iterate into the older one's buffer.
    """
    current = targets.clone() if start is None else start
    following = torch.empty_like(current)
    for step in range(1, max_iters + 1):
        torch.addmm(targets, transition, current, beta=1 - w, alpha=w, out=following)
        smallest, largest = torch.aminmax(current.sub_(following))  # the change, in the old buffer
        current, following = following, current
        if max(-smallest.item(), largest.item()) < tol:
            break
    return current, step


def conjugate_gradient(transition, targets, w, tol=1e-6, max_iters=1000, start=None):
    """CG on (I - w P) X = (1 - w) Y, column by column in parallel, from `start` (default 0;
    overwritten); returns X and the step count.

    Stops when every column's residual norm is below tol times its right-hand side's norm.
    Five B x C buffers, updated in place.
    """
    tiny = torch.finfo(targets.dtype).tiny
    if start is None:
        solution, residual = torch.zeros_like(targets), (1 - w) * targets
    else:  # residual = (1 - w) Y - (I - w P) X0
        solution = start
        residual = torch.addmm(start, transition, start, beta=-1, alpha=w).add_(targets, alpha=1 - w)
    direction, applied, product = residual.clone(), torch.empty_like(targets), torch.empty_like(targets)

    def column_dots(a, b):  # a product and a row sum beat a column-wise norm of a row-major matrix
        return torch.mul(a, b, out=product).sum(dim=0)

    residual_sq = column_dots(residual, residual)
    threshold = column_dots(targets, targets).mul_((tol * (1 - w)) ** 2)
    step = 0
    while step < max_iters and not bool((residual_sq <= threshold).all()):
        step += 1
        torch.addmm(direction, transition, direction, alpha=-w, out=applied)  # (I - w P) direction
        alpha = residual_sq / column_dots(direction, applied).clamp_min_(tiny)
        solution.addcmul_(direction, alpha)
        residual.addcmul_(applied, alpha, value=-1)
        new_residual_sq = column_dots(residual, residual)
        direction.mul_(new_residual_sq / residual_sq.clamp_min(tiny)).add_(residual)
        residual_sq = new_residual_sq
    return solution, step
