import torch
from torch import nn
from torch.nn import functional as F

from criteria.base import CRITERIA, DEFAULT_CLASSES, Criterion
from criteria.common import triplet_distances


@CRITERIA.register("margin")
class Margin(Criterion):
    """Margin loss (Wu et al., ICCV 2017) on mined triplets (a, p, n):
    relu(d_ap - beta + margin) + relu(beta - d_an + margin), summed and divided by the number
    of non-zero terms (the positive and the negative terms counted apart). beta is learnt per
    class of the anchor (its own lr, beta_lr) unless beta_constant; nu weights an L1 penalty on
    the betas used, added to the sum before the division:
        (sum of the terms + nu * sum of the betas used) / (number of non-zero terms).
    """
    mines = "triplets"
    takes_references = True

    def __init__(self, miner=None, distance=None, n_classes=DEFAULT_CLASSES, margin=0.2, beta=1.2,
                 beta_lr=5e-4, nu=0.0, beta_constant=False):
        super().__init__()
        self.miner = self.use_miner(miner)
        self.distance = self.use_distance(distance)
        self.margin = margin
        self.lr = beta_lr
        self.nu = nu
        self.beta_constant = beta_constant
        if beta_constant:
            self.register_buffer("beta", torch.tensor(float(beta)))
        else:
            self.beta = nn.Parameter(torch.full((n_classes,), float(beta)))

    def forward(self, batch, labels, references=None):
        anchors, positives, negatives = self.miner(batch, labels, references)
        d_ap, d_an = triplet_distances(self.distance, batch, references, anchors, positives, negatives)
        beta = self.beta if self.beta_constant else self.beta[labels[anchors]]
        pos_loss = F.relu(d_ap - beta + self.margin)
        neg_loss = F.relu(beta - d_an + self.margin)
        active_terms = ((pos_loss > 0).sum() + (neg_loss > 0).sum()).clamp_min(1)
        total = (pos_loss + neg_loss).sum()
        if self.nu and not self.beta_constant:
            # Inside the normalisation, as in Wu et al.'s code and pytorch-metric-learning; the
            # released code adds it after the division, so weighted by the number of active terms.
            total = total + self.nu * beta.sum()
        return total / active_terms
