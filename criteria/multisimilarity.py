import torch

from criteria.base import CRITERIA, Criterion
from criteria.common import log1p_sum_exp, pair_masks, reference_embeddings
from diffusion import at_least_float32


@CRITERIA.register("multisimilarity")
class MultiSimilarity(Criterion):
    """Multi-Similarity loss (Wang et al., CVPR 2019) on cosine similarities S = F F^T.

    Pairs are mined per anchor: a negative is kept if S_in + margin > its hardest positive,
    a positive if S_ip - margin < its hardest negative; anchors left without a kept positive
    or negative are skipped and the loss is the mean over the rest. Against a memory the anchor's
    own entry is mined as a positive, then dropped (pytorch-metric-learning's rule, whose
    AvgNonZeroReducer averages as this loss does).
    """

    takes_references = True

    def __init__(self, pos_weight=2.0, neg_weight=40.0, margin=0.1, thresh=0.5):
        super().__init__()
        self.pos_weight = pos_weight
        self.neg_weight = neg_weight
        self.margin = margin
        self.thresh = thresh

    def forward(self, batch, labels, references=None):
        batch = at_least_float32(batch)
        similarities = batch @ reference_embeddings(batch, references).to(batch.dtype).T
        positives, negatives = pair_masks(labels, references)
        # pytorch-metric-learning's MultiSimilarityMiner mines a memory with the anchor's own entry among
        # the positives, and its CrossBatchMemory drops that pair after mining: an anchor whose only
        # positive is its own entry keeps the negatives within the margin of it, a term of negatives alone.
        mined_positives = positives if references is None else positives | references.own

        mining = similarities.detach()
        hardest_positive = mining.masked_fill(~mined_positives, float("inf")).amin(dim=1, keepdim=True)
        hardest_negative = mining.masked_fill(~negatives, float("-inf")).amax(dim=1, keepdim=True)
        kept_negatives = negatives & (mining + self.margin > hardest_positive)
        kept_mined = mined_positives & (mining - self.margin < hardest_negative)
        kept_anchors = kept_mined.any(dim=1) & kept_negatives.any(dim=1)
        kept_positives = kept_mined & positives

        shifted = similarities - self.thresh
        pos_term = log1p_sum_exp(-self.pos_weight * shifted, kept_positives) / self.pos_weight
        neg_term = log1p_sum_exp(self.neg_weight * shifted, kept_negatives) / self.neg_weight
        # Dividing by max(count, 1) keeps a graph-connected zero when no anchor is kept.
        per_anchor = torch.where(kept_anchors, pos_term + neg_term, torch.zeros_like(pos_term))
        return per_anchor.sum() / kept_anchors.sum().clamp_min(1)
