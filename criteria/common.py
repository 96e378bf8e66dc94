"""Label masks and reductions shared by the pair-based losses."""
import torch


def pair_masks(labels):
    """(positives, negatives), B x B: same label without the diagonal, and different label."""
    same_label = labels[:, None] == labels[None, :]
    positives = same_label & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return positives, ~same_label


def anchors_with_pairs(labels):
    """(anchors, positives, negatives): the indices of the rows with at least one positive and
    one negative, and the pair masks of every row."""
    positives, negatives = pair_masks(labels)
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
