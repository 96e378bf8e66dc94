import math

import torch
from torch.nn import functional as F

from criteria.base import CRITERIA, DEFAULT_CLASSES, DEFAULT_EMBED_DIM, Criterion


@CRITERIA.register("arcface")
class ArcFace(Criterion):
    """ArcFace (Deng et al., CVPR 2019), hyperparameters of Revisiting-DML: cross-entropy of
    feature_scale * cos(theta_c), theta_c the angle between x and the learnt class weight w_c,
    with theta_y + angular_margin (radians) for the true class y.
    """

    needs = "classes"

    def __init__(self, n_classes=DEFAULT_CLASSES, embed_dim=DEFAULT_EMBED_DIM, lr=5e-4, angular_margin=0.5,
                 feature_scale=16.0):
        super().__init__()
        self.class_map = self.class_parameters(n_classes, embed_dim, bound=1 / math.sqrt(embed_dim))
        self.lr = lr
        self.angular_margin = angular_margin
        self.feature_scale = feature_scale

    def forward(self, batch, labels):
        cosines = F.normalize(batch, dim=1) @ F.normalize(self.class_map, dim=1).T
        return F.cross_entropy(self.feature_scale * with_angular_margin(cosines, labels, self.angular_margin), labels)


def with_angular_margin(cosines, labels, margin):
    """cos(theta + margin) in each row's true-class column. Where theta + margin would pass pi
    the cosine stops decreasing; there, as in insightface, cos(theta) - margin sin(margin)."""
    target = cosines.gather(1, labels[:, None])
    sine = (1 - target.pow(2)).clamp_min(1e-12).sqrt()
    shifted = torch.where(target > math.cos(math.pi - margin),
                          target * math.cos(margin) - sine * math.sin(margin),
                          target - margin * math.sin(margin))
    return cosines.scatter(1, labels[:, None], shifted)
