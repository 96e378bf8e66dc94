"""Batch miners for tuple losses, as defined in Revisiting-DML (Roth et al., ICML 2020).

Each declares what it returns (criteria/base.py): "triplets" (anchors, positives, negatives),
"pairs" (anchors, positives, negative mask) or "sets" (anchors, positive mask, negative mask).
A loss can use every miner of the kind it `mines`; the first one defined here is its default.
Only anchors with a positive and a negative in the batch are mined. With references (a
cross-batch memory, criteria/memory.py) the positives and negatives are indices into them. Distances are euclidean,
similarities cosine; mining sees no gradient.
"""
import torch
from torch.nn import functional as F

from criteria.base import MINERS, Miner
from criteria.common import anchors_with_pairs, reference_embeddings


def _draw(weights):
    """One column index per row, drawn with probability proportional to the row's weights."""
    return torch.multinomial(weights.float(), 1).squeeze(1)


def _preferred_or_all(preferred, allowed):
    """Per row, the preferred entries when there is one, otherwise every allowed entry."""
    return torch.where(preferred.any(dim=1, keepdim=True), preferred, allowed)


@MINERS.register("distance")
class DistanceWeighted(Miner):
    """Distance-weighted sampling (Wu et al., ICCV 2017): a random positive per anchor and a
    negative drawn with weight 1 / q(d), q the density of pairwise distances of points spread
    uniformly on the unit sphere in D dimensions; distances are clipped below at lower_cutoff.
    """

    def __init__(self, lower_cutoff=0.5):
        self.lower_cutoff = lower_cutoff

    @torch.no_grad()
    def __call__(self, batch, labels, references=None):
        anchors, positives, negatives = anchors_with_pairs(labels, references)
        refs = reference_embeddings(batch, references)
        dim = batch.shape[1]
        distances = torch.cdist(batch[anchors].float(), refs.float()).clamp_min(self.lower_cutoff)
        log_inverse_density = ((2.0 - dim) * distances.log()
                               - (dim - 3) / 2 * (1 - 0.25 * distances.pow(2)).clamp_min(1e-8).log())
        log_inverse_density = log_inverse_density.masked_fill(~negatives[anchors], float("-inf"))
        weights = torch.softmax(log_inverse_density, dim=1)
        return anchors, _draw(positives[anchors]), _draw(weights)


@MINERS.register("random")
class RandomTriplets(Miner):
    """One random positive and one random negative per anchor."""

    @torch.no_grad()
    def __call__(self, batch, labels, references=None):
        anchors, positives, negatives = anchors_with_pairs(labels, references)
        return anchors, _draw(positives[anchors]), _draw(negatives[anchors])


@MINERS.register("semihard")
class SemiHard(Miner):
    """Semi-hard negatives (Schroff et al., FaceNet, CVPR 2015): a random positive p per anchor
    and a random negative n with d_ap < d_an < d_ap + margin; an anchor without such a negative
    gets a random negative.
    """

    def __init__(self, margin=0.2):
        self.margin = margin

    @torch.no_grad()
    def __call__(self, batch, labels, references=None):
        anchors, positives, negatives = anchors_with_pairs(labels, references)
        refs = reference_embeddings(batch, references)
        distances = torch.cdist(batch[anchors], refs)
        positive = _draw(positives[anchors])
        d_ap = distances.gather(1, positive[:, None])
        semihard = negatives[anchors] & (distances > d_ap) & (distances < d_ap + self.margin)
        return anchors, positive, _draw(_preferred_or_all(semihard, negatives[anchors]))


@MINERS.register("softhard")
class SoftHard(Miner):
    """Soft-hard mining (Revisiting-DML): per anchor a random positive farther than its nearest
    negative and a random negative nearer than its farthest positive; where there is none, a
    random positive (negative) instead.
    """

    @torch.no_grad()
    def __call__(self, batch, labels, references=None):
        anchors, positives, negatives = anchors_with_pairs(labels, references)
        refs = reference_embeddings(batch, references)
        positives, negatives = positives[anchors], negatives[anchors]
        distances = torch.cdist(batch[anchors], refs)
        nearest_negative = distances.masked_fill(~negatives, float("inf")).amin(dim=1, keepdim=True)
        farthest_positive = distances.masked_fill(~positives, float("-inf")).amax(dim=1, keepdim=True)
        hard_positives = positives & (distances > nearest_negative)
        hard_negatives = negatives & (distances < farthest_positive)
        return (anchors, _draw(_preferred_or_all(hard_positives, positives)),
                _draw(_preferred_or_all(hard_negatives, negatives)))


@MINERS.register("epshn")
class EasyPositiveSemiHardNegative(Miner):
    """Easy positive, semi-hard negative (Xuan et al., "Improved Embeddings with Easy Positive
    Triplet Mining", WACV 2020): per anchor its most similar positive p, and the most similar
    negative among those less similar than p (cosine similarity); anchors without one are dropped.
    """

    @torch.no_grad()
    def __call__(self, batch, labels, references=None):
        anchors, positives, negatives = anchors_with_pairs(labels, references)
        refs = reference_embeddings(batch, references)
        normalized = F.normalize(batch[anchors], dim=1)
        similarities = normalized @ F.normalize(refs, dim=1).T
        positive_similarity, positive = similarities.masked_fill(~positives[anchors], float("-inf")).max(dim=1)
        semihard = negatives[anchors] & (similarities < positive_similarity[:, None])
        negative = similarities.masked_fill(~semihard, float("-inf")).argmax(dim=1)
        kept = semihard.any(dim=1)
        return anchors[kept], positive[kept], negative[kept]


@MINERS.register("npair")
class NPairs(Miner):
    """N-pair tuples (Sohn, NeurIPS 2016), as in Revisiting-DML: per anchor one random positive,
    and every sample of another class as its negatives.
    """
    returns = "pairs"

    @torch.no_grad()
    def __call__(self, batch, labels, references=None):
        anchors, positives, negatives = anchors_with_pairs(labels, references)
        return anchors, _draw(positives[anchors]), negatives[anchors]


@MINERS.register("lifted")
class LiftedStructure(Miner):
    """Lifted-structure sets (Song et al., CVPR 2016), as in Revisiting-DML: per anchor all of
    its positives and all of its negatives.
    """
    returns = "sets"

    @torch.no_grad()
    def __call__(self, batch, labels, references=None):
        anchors, positives, negatives = anchors_with_pairs(labels, references)
        return anchors, positives[anchors], negatives[anchors]
