import math

import torch
from torch.nn import functional as F

from criteria.base import CRITERIA, DEFAULT_CLASSES, DEFAULT_EMBED_DIM, Criterion


@CRITERIA.register("softtriplet")
class SoftTriple(Criterion):
    """SoftTriple loss (Qian et al., ICCV 2019) with the hyperparameters of Revisiting-DML.

    n_centroids learnt unit centres w_c^k per class. The similarity of x to class c is
    S_c = sum_k softmax_k(x . w_c^k / gamma) x . w_c^k; the loss is the cross-entropy of
    la * (S - margin_delta on the true class) plus reg_weight * sum over centre pairs of one
    class of sqrt(2 + 1e-5 - 2 w_c^k . w_c^l), divided by n_classes * K * (K - 1) (as in the
    authors' code). Embeddings are L2-normalised.
    """

    needs = "classes"

    def __init__(self, n_classes=DEFAULT_CLASSES, embed_dim=DEFAULT_EMBED_DIM, lr=1e-5, n_centroids=2,
                 margin_delta=0.01, gamma=0.1, la=8.0, reg_weight=0.2):
        super().__init__()
        self.centroids = self.class_parameters(n_classes * n_centroids, embed_dim,
                                               bound=1 / math.sqrt(n_classes * n_centroids))
        self.n_classes = n_classes
        self.lr = lr
        self.n_centroids = n_centroids
        self.margin_delta = margin_delta
        self.gamma = gamma
        self.la = la
        self.reg_weight = reg_weight

    def forward(self, batch, labels):
        centroids = F.normalize(self.centroids, dim=1)
        to_centroids = (F.normalize(batch, dim=1) @ centroids.T).view(len(batch), self.n_classes, self.n_centroids)
        class_similarity = (torch.softmax(to_centroids / self.gamma, dim=2) * to_centroids).sum(dim=2)
        margins = self.margin_delta * F.one_hot(labels, self.n_classes).to(class_similarity.dtype)
        loss = F.cross_entropy(self.la * (class_similarity - margins), labels)
        if self.n_centroids > 1:
            per_class = centroids.view(self.n_classes, self.n_centroids, -1)
            centroid_similarity = per_class @ per_class.transpose(1, 2)
            pairs = torch.triu(torch.ones(self.n_centroids, self.n_centroids, dtype=torch.bool,
                                          device=batch.device), diagonal=1)
            spread = (2.00001 - 2 * centroid_similarity[:, pairs]).sqrt().sum()
            loss = loss + self.reg_weight * spread / (self.n_classes * self.n_centroids * (self.n_centroids - 1))
        return loss
