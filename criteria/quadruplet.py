import torch
from torch.nn import functional as F

from criteria.base import CRITERIA, Criterion
from criteria.common import mean_or_zero


@CRITERIA.register("quadruplet")
class Quadruplet(Criterion):
    """Quadruplet loss (Chen et al., "Beyond triplet loss", CVPR 2017) with the unsquared
    distances and margins of Revisiting-DML. For each mined triplet (a, p, n) and a fourth
    sample k drawn at random from a class that is neither a's nor n's:
    mean relu(d_ap - d_an + margin_alpha_1) + mean relu(d_ap - d_nk + margin_alpha_2),
    the second mean over the triplets for which such a k exists.
    """
    mines = "triplets"

    def __init__(self, miner=None, distance=None, margin_alpha_1=0.2, margin_alpha_2=0.2):
        super().__init__()
        self.miner = self.use_miner(miner)
        self.distance = self.use_distance(distance)
        self.margin_alpha_1 = margin_alpha_1
        self.margin_alpha_2 = margin_alpha_2

    def forward(self, batch, labels):
        anchors, positives, negatives = self.miner(batch, labels)
        d_ap = self.distance(batch[anchors], batch[positives])
        d_an = self.distance(batch[anchors], batch[negatives])
        rows, fourth = self.fourth_negatives(labels, anchors, negatives)
        d_nk = self.distance(batch[negatives[rows]], batch[fourth])
        return (mean_or_zero(F.relu(d_ap - d_an + self.margin_alpha_1))
                + mean_or_zero(F.relu(d_ap[rows] - d_nk + self.margin_alpha_2)))

    @staticmethod
    @torch.no_grad()
    def fourth_negatives(labels, anchors, negatives):
        """(rows, fourth): the triplets that have a candidate, and one drawn for each."""
        allowed = ((labels[None, :] != labels[anchors][:, None])
                   & (labels[None, :] != labels[negatives][:, None]))
        rows = torch.nonzero(allowed.any(dim=1)).squeeze(1)
        return rows, torch.multinomial(allowed[rows].float(), 1).squeeze(1)
