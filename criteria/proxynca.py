import torch
from torch import nn
from torch.nn import functional as F

from criteria.base import CRITERIA, DEFAULT_CLASSES, DEFAULT_EMBED_DIM, Criterion
from criteria.distances import euclidean


@CRITERIA.register("proxynca")
class ProxyNCA(Criterion):
    """ProxyNCA (Movshovitz-Attias et al., ICCV 2017), as in Revisiting-DML: one learnt proxy
    per class; embeddings and proxies are L2-normalised and scaled by `scale`, d is the squared
    euclidean distance, and the loss is mean_i d(x_i, p_y) + log sum_{c != y} exp(-d(x_i, p_c)).
    Proxies start as N(0, 1/64) draws and learn with their own lr (Revisiting: 50 x 1e-5).
    """

    needs = "classes"

    def __init__(self, n_classes=DEFAULT_CLASSES, embed_dim=DEFAULT_EMBED_DIM, lr=5e-4, scale=3.0):
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(n_classes, embed_dim) / 8)
        self.lr = lr
        self.scale = scale

    def forward(self, batch, labels):
        embeddings = self.scale * F.normalize(batch, dim=1)
        proxies = self.scale * F.normalize(self.proxies, dim=1)
        distances = euclidean(embeddings[:, None], proxies[None], squared=True)
        own_class = F.one_hot(labels, len(proxies)).bool()
        positive = distances[own_class]
        negative = torch.logsumexp(-distances.masked_fill(own_class, float("inf")), dim=1)
        return (positive + negative).mean()
