from torch.nn import functional as F

from criteria.base import CRITERIA, Criterion
from criteria.common import reference_embeddings


@CRITERIA.register("snr")
class SignalToNoise(Criterion):
    """Signal-to-noise ratio triplet loss (Yuan et al., CVPR 2019), as in Revisiting-DML.

    The SNR distance of a pair is var(f_j - f_a) / var(f_a) (variance over the embedding
    dimensions, unbiased). Over mined triplets: the sum of relu(snr_ap - snr_an + margin)
    divided by the number of non-zero terms, plus reg_lambda * mean_a |sum_d f_a,d|.
    """
    mines = "triplets"
    takes_references = True

    def __init__(self, miner=None, margin=0.2, reg_lambda=0.005):
        super().__init__()
        self.miner = self.use_miner(miner)
        self.margin = margin
        self.reg_lambda = reg_lambda

    def forward(self, batch, labels, references=None):
        anchors, positives, negatives = self.miner(batch, labels, references)
        refs = reference_embeddings(batch, references)
        if len(anchors) == 0:
            return batch.sum() * 0
        anchor_embeddings = batch[anchors]
        anchor_variance = anchor_embeddings.var(dim=1)
        snr_ap = (anchor_embeddings - refs[positives]).var(dim=1) / anchor_variance
        snr_an = (anchor_embeddings - refs[negatives]).var(dim=1) / anchor_variance
        triplet_terms = F.relu(snr_ap - snr_an + self.margin)
        snr_loss = triplet_terms.sum() / (triplet_terms > 0).sum().clamp_min(1)
        return snr_loss + self.reg_lambda * anchor_embeddings.sum(dim=1).abs().mean()
