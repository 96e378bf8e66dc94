"""Batch miners for tuple losses: each returns (anchors, positives, negatives) index tensors."""
import torch

from criteria.registry import register_miner


def _valid_anchors(labels):
    same_label = labels[:, None] == labels[None, :]
    positives = same_label & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    anchors = torch.nonzero(positives.any(dim=1) & (~same_label).any(dim=1)).squeeze(1)
    return anchors, positives, ~same_label


def _draw(weights):
    """One column index per row, drawn with probability proportional to the row's weights."""
    return torch.multinomial(weights, 1).squeeze(1)


@register_miner("random")
class RandomTriplets:
    """One random positive and one random negative per anchor."""
    hyperparameters = {}

    def __call__(self, batch, labels):
        anchors, positives, negatives = _valid_anchors(labels)
        return anchors, _draw(positives[anchors].float()), _draw(negatives[anchors].float())


@register_miner("distance")
class DistanceWeighted:
    """Distance-weighted sampling (Wu et al., ICCV 2017): a random positive per anchor and a
    negative drawn with weight 1 / q(d), q the density of pairwise distances of points spread
    uniformly on the unit sphere in D dimensions; distances are clipped below at lower_cutoff.
    """
    hyperparameters = {"lower_cutoff": 0.5}

    def __init__(self, lower_cutoff):
        self.lower_cutoff = lower_cutoff

    @torch.no_grad()
    def __call__(self, batch, labels):
        anchors, positives, negatives = _valid_anchors(labels)
        dim = batch.shape[1]
        distances = torch.cdist(batch[anchors].float(), batch.float()).clamp_min(self.lower_cutoff)
        log_inverse_density = ((2.0 - dim) * distances.log()
                               - (dim - 3) / 2 * (1 - 0.25 * distances.pow(2)).clamp_min(1e-8).log())
        log_inverse_density = log_inverse_density.masked_fill(~negatives[anchors], float("-inf"))
        weights = torch.softmax(log_inverse_density, dim=1)
        return anchors, _draw(positives[anchors].float()), _draw(weights)
