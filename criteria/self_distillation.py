"""The one place self-distillation lives: PSD and OBDP on top of any base criterion, and the
teacher they distil from. The method's formulas are written out in docs/method.md."""
import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

import diffusion
from diffusion import Settings as DiffusionSettings
from errors import SettingError


@dataclass(frozen=True)
class Distillation:
    """The settings of self-distillation: PSD alone, or with OBDP its target diffused as `diffusion`
    says (diffusion.Settings: graph, solver, w, ...). The defaults are the paper's; PSD False is the
    plain criterion."""
    PSD: bool = False
    OBDP: bool = False
    kd_tau: float = 1.0
    kd_lambda: float = 75.0
    diffusion: DiffusionSettings = field(default_factory=DiffusionSettings)

    def __post_init__(self):
        if self.OBDP and not self.PSD:
            raise SettingError("OBDP diffuses the target of PSD; add PSD", ["OBDP", "PSD"])
        if self.kd_tau <= 0:
            raise SettingError(f"kd_tau must be positive, got {self.kd_tau}", ["kd_tau"])
        if self.kd_lambda < 0:
            raise SettingError(f"kd_lambda must be 0 or more, got {self.kd_lambda}", ["kd_lambda"])

    def weight(self, epoch, n_epochs):
        """The progressive weight (epoch / n_epochs) * kd_lambda * kd_tau^2 (epoch counted from 0); 0 without PSD."""
        return epoch / n_epochs * self.kd_lambda * self.kd_tau ** 2 if self.PSD else 0.0

    def target_diffusion(self):
        """The diffusion of the target: None for PSD alone."""
        return self.diffusion if self.OBDP else None


class SelfDistilledCriterion(nn.Module):
    """L = L_dml + (epoch / n_epochs) * kd_lambda * kd_tau^2 * KL(target || p): the PSD loss of
    Zeng et al. 2024 with its progressive weight (docs/method.md). Without `distillation` (or with
    its PSD off) it is the plain criterion.

    With a cross-batch `memory` (criteria.CrossBatchMemory) L_dml compares the batch with the
    memory once it is in use, and with OBDP the target is diffused over the graph of the batch and
    the memory's teacher part."""

    def __init__(self, base, distillation=None, n_epochs=150, memory=None):
        super().__init__()
        self.base = base
        self.distillation = distillation if distillation is not None and distillation.PSD else None
        self.n_epochs = n_epochs
        self.memory = memory
        self.last_terms = {}

    def distillation_weight(self, epoch):
        return 0.0 if self.distillation is None else self.distillation.weight(epoch, self.n_epochs)

    def needs_teacher(self, epoch):
        return self.distillation_weight(epoch) > 0

    def optim_groups(self):
        """Parameter groups of the base criterion (proxies, class margins) with their own lr."""
        return self.base.optim_groups() if hasattr(self.base, "optim_groups") else []

    def teacher_refreshed(self):
        """The teacher took the student's weights: the memory's teacher part belongs to the old one."""
        if self.memory is not None:
            self.memory.refresh_teacher()

    def forward(self, batch, labels, teacher_batch=None, epoch=0):
        slots = None
        if self.memory is not None and self.memory.begin_step():
            slots = self.memory.push(batch, labels, teacher_batch)
            loss = self.base(batch, labels, self.memory.references(slots))
        else:
            loss = self.base(batch, labels)
        self.last_terms = {"dml": loss.detach()}
        weight = self.distillation_weight(epoch)
        if weight > 0:
            if teacher_batch is None:
                raise ValueError("self-distillation at this epoch needs teacher_batch")
            if slots is not None and self.memory.teacher:
                kd = memory_distillation_loss(batch, self.memory, slots, self.distillation.kd_tau,
                                              self.distillation.target_diffusion())
            else:
                kd = distillation_loss(batch, teacher_batch, self.distillation.kd_tau,
                                       self.distillation.target_diffusion())
            self.last_terms["kd"] = kd.detach()
            loss = loss + weight * kd
        return loss


def distillation_loss(batch, teacher_batch, kd_tau, target_diffusion=None):
    """KL(target || row_softmax(F F^T / kd_tau)), averaged over rows; the target (diffused as
    `target_diffusion` says, if given) has no gradient."""
    student = diffusion.at_least_float32(batch)
    log_p = torch.log_softmax(student @ student.T / kd_tau, dim=1)
    target = diffusion.soft_targets(teacher_batch, kd_tau=kd_tau, diffusion=target_diffusion)
    return F.kl_div(log_p, target, reduction="batchmean")


def memory_distillation_loss(batch, memory, slots, kd_tau, target_diffusion):
    """distillation_loss with the target diffused over the graph of the memory's teacher part, which
    holds the batch at `slots` (criteria/memory.py)."""
    student = diffusion.at_least_float32(batch)
    log_p = torch.log_softmax(student @ student.T / kd_tau, dim=1)
    nodes = memory.teacher_nodes()
    position = torch.empty(memory.size, dtype=torch.long, device=nodes.device)
    position[nodes] = torch.arange(len(nodes), device=nodes.device)
    edges = memory.teacher_edges(target_diffusion.knn) if memory.k is not None else None
    target = diffusion.memory_soft_targets(memory.teacher_embeddings[nodes], position[slots], kd_tau,
                                           target_diffusion, edges)
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
