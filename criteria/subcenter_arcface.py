import math

from torch.nn import functional as F

from criteria.arcface import with_angular_margin
from criteria.base import CRITERIA, DEFAULT_CLASSES, DEFAULT_EMBED_DIM, Criterion


@CRITERIA.register("subcenter_arcface")
class SubCenterArcFace(Criterion):
    """Sub-center ArcFace (Deng et al., ECCV 2020), the paper's defaults (K 3, s 64, m 0.5):
    ArcFace on cos(theta_c) = max_k cos(x, w_c^k) over K learnt sub-centres per class.
    """

    needs = "classes"

    def __init__(self, n_classes=DEFAULT_CLASSES, embed_dim=DEFAULT_EMBED_DIM, lr=5e-4, angular_margin=0.5,
                 feature_scale=64.0, sub_centers=3):
        super().__init__()
        self.class_map = self.class_parameters(n_classes * sub_centers, embed_dim, bound=1 / math.sqrt(embed_dim))
        self.n_classes = n_classes
        self.lr = lr
        self.angular_margin = angular_margin
        self.feature_scale = feature_scale
        self.sub_centers = sub_centers

    def forward(self, batch, labels):
        cosines = F.normalize(batch, dim=1) @ F.normalize(self.class_map, dim=1).T
        cosines = cosines.view(len(batch), self.n_classes, self.sub_centers).amax(dim=2)
        return F.cross_entropy(self.feature_scale * with_angular_margin(cosines, labels, self.angular_margin), labels)
