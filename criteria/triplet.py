from torch.nn import functional as F

from criteria.base import CRITERIA, Criterion
from criteria.common import mean_or_zero, triplet_distances


@CRITERIA.register("triplet")
class Triplet(Criterion):
    """Triplet loss (Schroff et al., FaceNet, CVPR 2015), as in Revisiting-DML: the mean over
    mined triplets (a, p, n) of relu(d(a, p)^2 - d(a, n)^2 + margin), on squared distances.
    """
    mines = "triplets"
    takes_references = True

    def __init__(self, miner=None, distance=None, margin=0.2):
        super().__init__()
        self.miner = self.use_miner(miner)
        self.distance = self.use_distance(distance)
        self.margin = margin

    def forward(self, batch, labels, references=None):
        anchors, positives, negatives = self.miner(batch, labels, references)
        d_ap, d_an = triplet_distances(self.distance, batch, references, anchors, positives, negatives, squared=True)
        return mean_or_zero(F.relu(d_ap - d_an + self.margin))
