from torch.nn import functional as F

from criteria.base import CRITERIA, Criterion
from criteria.common import masked_logsumexp, mean_or_zero, reference_embeddings


@CRITERIA.register("lifted")
class Lifted(Criterion):
    """Lifted structure loss (Song et al., CVPR 2016) in the per-anchor form of Revisiting-DML
    (the generalised lifted loss of Hermans et al. 2017): the mean over anchors of
    relu(log sum_p exp(d_ap) + log sum_n exp(neg_margin - d_an)), plus l2 times the mean
    embedding norm (the embeddings need not be normalised).
    """
    mines = "sets"
    takes_references = True

    def __init__(self, miner=None, distance=None, neg_margin=1.0, l2=0.005):
        super().__init__()
        self.miner = self.use_miner(miner)
        self.distance = self.use_distance(distance)
        self.neg_margin = neg_margin
        self.l2 = l2

    def forward(self, batch, labels, references=None):
        anchors, positive_mask, negative_mask = self.miner(batch, labels, references)
        if len(anchors) == 0:
            return batch.sum() * 0
        distances = self.distance(batch[anchors][:, None], reference_embeddings(batch, references)[None])
        per_anchor = F.relu(masked_logsumexp(distances, positive_mask)
                            + masked_logsumexp(self.neg_margin - distances, negative_mask))
        return mean_or_zero(per_anchor) + self.l2 * batch.norm(dim=1).mean()
