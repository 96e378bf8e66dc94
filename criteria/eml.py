import math

import torch
from torch.nn import functional as F

from criteria.base import CRITERIA, Criterion
from criteria.common import anchors_with_pairs, masked_logsumexp, reference_embeddings


@CRITERIA.register("eml")
class EnsembleMetric(Criterion):
    """EML loss of PaddlePaddle's metric-learning suite, after "Large Scale Strongly Supervised
    Ensemble Metric Learning" (Huang et al. 2012), on squared distances d.

    Per anchor with positives P and negatives N:
        x = mean_{p in P} exp(d_ap) * mean_{n in N} exp(-d_an),
        l = log(1 + beta x) / log(1 + beta),
    mean over anchors. Computed in log space (softplus of log beta + log x) where the suite
    switches to log(beta x) above a threshold; the two differ by less than 1e-10.
    """
    takes_references = True

    def __init__(self, distance=None, beta=100000.0):
        super().__init__()
        self.distance = self.use_distance(distance)
        self.beta = beta

    def forward(self, batch, labels, references=None):
        anchors, positives, negatives = anchors_with_pairs(labels, references)
        if len(anchors) == 0:
            return batch.sum() * 0
        positives, negatives = positives[anchors], negatives[anchors]
        distances = self.distance(batch[anchors][:, None], reference_embeddings(batch, references)[None], squared=True)
        counts = torch.stack([positives.sum(dim=1), negatives.sum(dim=1)]).to(distances.dtype)
        log_x = (masked_logsumexp(distances, positives) + masked_logsumexp(-distances, negatives)
                 - counts.log().sum(dim=0))
        return (F.softplus(math.log(self.beta) + log_x) / math.log1p(self.beta)).mean()
