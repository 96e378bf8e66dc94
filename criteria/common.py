"""Label masks and reductions shared by the pair-based losses, and the references a batch is
compared with (the batch itself, or a cross-batch memory)."""
from typing import NamedTuple

import torch


class References(NamedTuple):
    """What the anchors of a batch (B rows) are compared with: R embeddings without gradient, their
    labels, and which of them is each anchor's own entry (B x R; a memory's copy of the anchor just
    stored), never a pair."""
    embeddings: torch.Tensor
    labels: torch.Tensor
    own: torch.Tensor


def reference_embeddings(batch, references=None):
    """The embeddings the anchors are compared with: the batch itself when there are no references."""
    return batch if references is None else references.embeddings


def triplet_distances(distance, batch, references, anchors, positives, negatives, **options):
    """d(anchor, positive) and d(anchor, negative) of mined triplets, the positive and negative taken
    from the references (the batch without them); `options` go to the distance (squared=True)."""
    refs = reference_embeddings(batch, references)
    anchor_embeddings = batch[anchors]
    return distance(anchor_embeddings, refs[positives], **options), distance(anchor_embeddings, refs[negatives],
                                                                             **options)


def pair_masks(labels, references=None):
    """(positives, negatives), B x R: same label but not the anchor's own entry, and different label.
    Without references R = B and the own entry is the diagonal. A batch that drew one image twice
    keeps the two copies as a positive pair, as the released code does, and so does a memory (the
    copies are two entries, as in pytorch-metric-learning's CrossBatchMemory)."""
    if references is None:
        same_label = labels[:, None] == labels[None, :]
        positives = same_label & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        return positives, ~same_label
    same_label = labels[:, None] == references.labels[None, :]
    return same_label & ~references.own, ~same_label


def anchors_with_pairs(labels, references=None):
    """(anchors, positives, negatives): the indices of the rows with at least one positive and
    one negative, and the pair masks of every row."""
    positives, negatives = pair_masks(labels, references)
    anchors = torch.nonzero(positives.any(dim=1) & negatives.any(dim=1)).squeeze(1)
    return anchors, positives, negatives


def log1p_sum_exp(values, mask):
    """log(1 + sum_j exp(values_ij)) over the masked entries of each row, overflow-safe."""
    masked = values.masked_fill(~mask, float("-inf"))
    with_one = torch.cat([torch.zeros_like(masked[:, :1]), masked], dim=1)
    return torch.logsumexp(with_one, dim=1)


def masked_logsumexp(values, mask):
    """log(sum_j exp(values_ij)) over the masked entries of each row; every row needs one."""
    return torch.logsumexp(values.masked_fill(~mask, float("-inf")), dim=1)


def mean_or_zero(values):
    """The mean, or a zero still connected to the graph when there is nothing to average."""
    return values.sum() / max(values.numel(), 1)
