"""The distances a tuple loss can be asked to use with `--distance`.

Each takes x (..., D) and y (..., D) and broadcasts over the leading dimensions: equal-length
rows give paired distances, x[:, None] against y[None] gives the full matrix.
"""
from torch.nn import functional as F

from registry import Registry


def euclidean(x, y, squared=False):
    """||x - y||, or its square."""
    squared_distance = (x - y).pow(2).sum(-1)
    if squared:
        return squared_distance
    # The clamp keeps the gradient finite (zero) where x == y, e.g. a sample against itself.
    return squared_distance.clamp_min(1e-16).sqrt()


def cosine(x, y, squared=False):
    """1 - cos(x, y), or its square."""
    distance = 1 - (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(-1)
    return distance.pow(2) if squared else distance


DISTANCES = Registry("distance")
DISTANCES.register("euclidean", euclidean)
DISTANCES.register("cosine", cosine)
DEFAULT = "euclidean"
