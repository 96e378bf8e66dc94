from torch.nn import functional as F

from criteria.base import CRITERIA, Criterion
from criteria.common import mean_or_zero, triplet_distances


@CRITERIA.register("contrastive")
class Contrastive(Criterion):
    """Contrastive loss (Hadsell et al., CVPR 2006), as in Revisiting-DML: over the pairs (a, p)
    and (a, n) of mined triplets, mean relu(d_ap - pos_margin) + mean relu(neg_margin - d_an).
    """
    mines = "triplets"
    takes_references = True

    def __init__(self, miner=None, distance=None, pos_margin=0.0, neg_margin=1.0):
        super().__init__()
        self.miner = self.use_miner(miner)
        self.distance = self.use_distance(distance)
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin

    def forward(self, batch, labels, references=None):
        anchors, positives, negatives = self.miner(batch, labels, references)
        d_ap, d_an = triplet_distances(self.distance, batch, references, anchors, positives, negatives)
        return mean_or_zero(F.relu(d_ap - self.pos_margin)) + mean_or_zero(F.relu(self.neg_margin - d_an))
