from torch import nn
from torch.nn import functional as F

from criteria.common import mean_or_zero
from criteria.miners import TRIPLET_MINERS
from criteria.registry import register_criterion


@register_criterion("triplet")
class Triplet(nn.Module):
    """Triplet loss (Schroff et al., FaceNet, CVPR 2015), as in Revisiting-DML: the mean over
    mined triplets (a, p, n) of relu(d(a, p)^2 - d(a, n)^2 + margin), on squared distances.
    """
    hyperparameters = {"margin": 0.2}
    default_miner = "distance"
    miners = TRIPLET_MINERS

    def __init__(self, miner, distance, margin):
        super().__init__()
        self.miner = miner
        self.distance = distance
        self.margin = margin

    def forward(self, batch, labels):
        anchors, positives, negatives = self.miner(batch, labels)
        anchor_embeddings = batch[anchors]
        d_ap = self.distance(anchor_embeddings, batch[positives], squared=True)
        d_an = self.distance(anchor_embeddings, batch[negatives], squared=True)
        return mean_or_zero(F.relu(d_ap - d_an + self.margin))
