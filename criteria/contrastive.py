from torch import nn
from torch.nn import functional as F

from criteria.common import mean_or_zero
from criteria.miners import TRIPLET_MINERS
from criteria.registry import register_criterion


@register_criterion("contrastive")
class Contrastive(nn.Module):
    """Contrastive loss (Hadsell et al., CVPR 2006), as in Revisiting-DML: over the pairs (a, p)
    and (a, n) of mined triplets, mean relu(d_ap - pos_margin) + mean relu(neg_margin - d_an).
    """
    hyperparameters = {"pos_margin": 0.0, "neg_margin": 1.0}
    default_miner = "distance"
    miners = TRIPLET_MINERS

    def __init__(self, miner, distance, pos_margin, neg_margin):
        super().__init__()
        self.miner = miner
        self.distance = distance
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin

    def forward(self, batch, labels):
        anchors, positives, negatives = self.miner(batch, labels)
        anchor_embeddings = batch[anchors]
        d_ap = self.distance(anchor_embeddings, batch[positives])
        d_an = self.distance(anchor_embeddings, batch[negatives])
        return mean_or_zero(F.relu(d_ap - self.pos_margin)) + mean_or_zero(F.relu(self.neg_margin - d_an))
