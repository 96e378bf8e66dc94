import math

from torch.nn import functional as F

from criteria.base import CRITERIA, Criterion
from criteria.common import log1p_sum_exp, reference_embeddings
from criteria.npair import npair_logits


@CRITERIA.register("angular")
class Angular(Criterion):
    """Angular loss (Wang et al., ICCV 2017) with its N-pair companion, as in Revisiting-DML.

    On L2-normalised x, per anchor a with positive p and negatives n (the other classes):
    l_ang = log(1 + sum_n exp(4 tan^2(alpha) (x_a + x_p) . x_n - 2 (1 + tan^2(alpha)) x_a . x_p)).
    Loss: mean N-pair term on the raw embeddings (logits clipped to +-50) + npair_ang_weight
    * mean l_ang + npair_l2 * mean embedding norm. alpha is in degrees.
    """
    mines = "pairs"
    takes_references = True

    def __init__(self, miner=None, alpha=45.0, npair_ang_weight=2.0, npair_l2=0.005):
        super().__init__()
        self.miner = self.use_miner(miner)
        self.tan_squared = math.tan(math.radians(alpha)) ** 2
        self.npair_ang_weight = npair_ang_weight
        self.npair_l2 = npair_l2

    def forward(self, batch, labels, references=None):
        anchors, positives, negative_mask = self.miner(batch, labels, references)
        refs = reference_embeddings(batch, references)
        if len(anchors) == 0:
            return batch.sum() * 0
        normalized = F.normalize(refs, dim=1)
        anchor_directions, positive_directions = F.normalize(batch[anchors], dim=1), normalized[positives]
        angular_logits = (4 * self.tan_squared * (anchor_directions + positive_directions) @ normalized.T
                          - 2 * (1 + self.tan_squared)
                          * (anchor_directions * positive_directions).sum(dim=1, keepdim=True))
        angular = log1p_sum_exp(angular_logits, negative_mask).mean()
        npair = log1p_sum_exp(npair_logits(batch[anchors], refs[positives], refs).clamp(-50, 50),
                              negative_mask).mean()
        return npair + self.npair_ang_weight * angular + self.npair_l2 * batch.norm(dim=1).mean()
