import torch
from torch.nn import functional as F

from criteria.base import CRITERIA, Criterion


@CRITERIA.register("histogram")
class Histogram(Criterion):
    """Histogram loss (Ustinova & Lempitsky, NeurIPS 2016) on cosine similarities.

    The similarities of the positive and of the negative pairs (i < j) are spread over nbins
    nodes t_r evenly spaced on [-1, 1] with linear (triangular) weights max(0, 1 - |s - t_r| / step),
    giving histograms h+ and h- that each sum to 1. Loss: sum_r h-_r * sum_{q <= r} h+_q, the
    probability that a negative pair is more similar than a positive one. Zero without a
    positive or a negative pair.
    """

    def __init__(self, nbins=65):
        super().__init__()
        self.nbins = nbins

    def forward(self, batch, labels):
        normalized = F.normalize(batch, dim=1)
        upper = torch.triu(torch.ones(len(labels), len(labels), dtype=torch.bool, device=labels.device), diagonal=1)
        similarities = (normalized @ normalized.T)[upper]
        is_positive = (labels[:, None] == labels[None, :])[upper]
        n_positive, n_negative = int(is_positive.sum()), int((~is_positive).sum())
        if n_positive == 0 or n_negative == 0:
            return batch.sum() * 0
        nodes = torch.linspace(-1, 1, self.nbins, dtype=batch.dtype, device=batch.device)
        step = 2 / (self.nbins - 1)
        weights = F.relu(1 - (similarities[None, :] - nodes[:, None]).abs() / step)
        positive_histogram = weights[:, is_positive].sum(dim=1) / n_positive
        negative_histogram = weights[:, ~is_positive].sum(dim=1) / n_negative
        return (negative_histogram * positive_histogram.cumsum(dim=0)).sum()
