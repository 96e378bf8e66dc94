"""The one place self-distillation lives: PSD and OBDP on top of any base criterion, and the
teacher they distil from. The method's formulas are written out in docs/method.md."""
import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

import diffusion


@dataclass(frozen=True)
class Distillation:
    """The settings of PSD (diffusion_w = 0) or OBD-SD (diffusion_w > 0); the defaults are the
    paper's. norm, k, knn, gamma, solver, tol and max_iters choose the diffusion's graph and
    solver (diffusion.soft_targets); the defaults are the released code's dense softmax graph
    and direct solve."""
    kd_tau: float = 1.0
    kd_lambda: float = 75.0
    n_epochs: int = 150
    diffusion_w: float = 0.0
    diffusion_tau: float = 1.0
    norm: str = "softmax"
    k: int | None = None
    knn: str = "symmetric"
    gamma: float = 3.0
    solver: str = "solve"
    tol: float = 1e-6
    max_iters: int = 1000

    def weight(self, epoch):
        """The progressive weight (epoch / n_epochs) * kd_lambda * kd_tau^2 (epoch counted from 0)."""
        return epoch / self.n_epochs * self.kd_lambda * self.kd_tau ** 2

    def graph_and_solver(self):
        """The keywords of diffusion.soft_targets that choose the graph and the solver."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.name in ("norm", "k", "knn", "gamma", "solver", "tol", "max_iters")}


class SelfDistilledCriterion(nn.Module):
    """L = L_dml + (epoch / n_epochs) * kd_lambda * kd_tau^2 * KL(target || p): the PSD loss of
    Zeng et al. 2024 with its progressive weight (docs/method.md). `distillation` is None for the
    plain criterion, else a Distillation."""

    def __init__(self, base, distillation=None):
        super().__init__()
        self.base = base
        self.distillation = distillation
        self.last_terms = {}

    def distillation_weight(self, epoch):
        return 0.0 if self.distillation is None else self.distillation.weight(epoch)

    def needs_teacher(self, epoch):
        return self.distillation_weight(epoch) > 0

    def optim_groups(self):
        """Parameter groups of the base criterion (proxies, class margins) with their own lr."""
        return self.base.optim_groups() if hasattr(self.base, "optim_groups") else []

    def forward(self, batch, labels, teacher_batch=None, epoch=0):
        loss = self.base(batch, labels)
        self.last_terms = {"dml": loss.detach()}
        weight = self.distillation_weight(epoch)
        if weight > 0:
            if teacher_batch is None:
                raise ValueError("self-distillation at this epoch needs teacher_batch")
            d = self.distillation
            kd = distillation_loss(batch, teacher_batch, d.kd_tau, d.diffusion_w, d.diffusion_tau,
                                   **d.graph_and_solver())
            self.last_terms["kd"] = kd.detach()
            loss = loss + weight * kd
        return loss


def distillation_loss(batch, teacher_batch, kd_tau, diffusion_w, diffusion_tau, **diffusion_options):
    """KL(target || row_softmax(F F^T / kd_tau)), averaged over rows; the target has no gradient."""
    student = diffusion.at_least_float32(batch)
    log_p = torch.log_softmax(student @ student.T / kd_tau, dim=1)
    target = diffusion.soft_targets(teacher_batch, kd_tau=kd_tau, w=diffusion_w, diffusion_tau=diffusion_tau,
                                    **diffusion_options)
    return F.kl_div(log_p, target, reduction="batchmean")


class Teacher:
    """The student as it was at the end of the previous epoch (epoch 0: the initial student),
    frozen and kept in memory. The released code reloads it from that epoch's checkpoint file:
    the same weights, without a file per epoch."""

    def __init__(self, student):
        self.network = copy.deepcopy(student).eval().requires_grad_(False)

    def refresh(self, student):
        """After an epoch, or once a resumed student is loaded: the teacher takes its weights."""
        self.network.load_state_dict(student.state_dict())
