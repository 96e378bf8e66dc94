"""The one place self-distillation lives: PSD and OBDP on top of any base criterion."""
import torch
from torch import nn
from torch.nn import functional as F

import diffusion


class SelfDistilledCriterion(nn.Module):
    """L = L_dml + (epoch / n_epochs) * kd_lambda * kd_tau^2 * KL(target || p): the PSD loss of
    Zeng et al. 2024 with its progressive weight.

    `distillation` is None for the plain criterion. Otherwise a dict with kd_tau, kd_lambda,
    n_epochs, diffusion_w (0 = PSD, > 0 = OBDP), diffusion_tau and optionally diffusion_options
    (graph and solver keywords of diffusion.soft_targets).
    """

    def __init__(self, base, distillation=None):
        super().__init__()
        self.base = base
        self.distillation = distillation
        self.last_terms = {}

    def distillation_weight(self, epoch):
        if self.distillation is None:
            return 0.0
        d = self.distillation
        return epoch / d["n_epochs"] * d["kd_lambda"] * d["kd_tau"] ** 2

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
            kd = distillation_loss(batch, teacher_batch, self.distillation["kd_tau"],
                                   self.distillation["diffusion_w"], self.distillation["diffusion_tau"],
                                   **self.distillation.get("diffusion_options", {}))
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
