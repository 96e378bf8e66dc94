import math

import torch
from torch import nn
from torch.nn import functional as F

from criteria.arcface import with_angular_margin
from criteria.registry import register_criterion


@register_criterion("subcenter_arcface")
class SubCenterArcFace(nn.Module):
    """Sub-center ArcFace (Deng et al., ECCV 2020), the paper's defaults (K 3, s 64, m 0.5):
    ArcFace on cos(theta_c) = max_k cos(x, w_c^k) over K learnt sub-centres per class.
    """
    hyperparameters = {"lr": 5e-4, "angular_margin": 0.5, "feature_scale": 64.0, "sub_centers": 3}

    def __init__(self, n_classes, embed_dim, lr, angular_margin, feature_scale, sub_centers):
        super().__init__()
        bound = 1 / math.sqrt(embed_dim)
        self.class_map = nn.Parameter(torch.empty(n_classes * sub_centers, embed_dim).uniform_(-bound, bound))
        self.n_classes = n_classes
        self.lr = lr
        self.angular_margin = angular_margin
        self.feature_scale = feature_scale
        self.sub_centers = sub_centers

    def optim_groups(self):
        return [{"params": [self.class_map], "lr": self.lr, "weight_decay": 0.0}]

    def forward(self, batch, labels):
        cosines = F.normalize(batch, dim=1) @ F.normalize(self.class_map, dim=1).T
        cosines = cosines.view(len(batch), self.n_classes, self.sub_centers).amax(dim=2)
        return F.cross_entropy(self.feature_scale * with_angular_margin(cosines, labels, self.angular_margin), labels)
