import torch
from torch import nn
from torch.nn import functional as F

from criteria.base import CRITERIA, DEFAULT_CLASSES, DEFAULT_EMBED_DIM, Criterion
from criteria.common import log1p_sum_exp


@CRITERIA.register("proxyanchor")
class ProxyAnchor(Criterion):
    """Proxy-Anchor loss (Kim et al., CVPR 2020) on cosine similarities s(x, p):
        1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x, p) - delta)))
      + 1/|P|  sum_{p in P}  log(1 + sum_{x in X_p-} exp( alpha (s(x, p) + delta))),
    P all proxies (one per class), P+ those with a sample in the batch, X_p+ / X_p- the batch
    samples of / not of p's class. Defaults and initialisation (kaiming normal, fan out) as in
    the authors' code; the proxies learn at lr (100 x their backbone lr of 1e-4).
    """

    needs = "classes"

    def __init__(self, n_classes=DEFAULT_CLASSES, embed_dim=DEFAULT_EMBED_DIM, lr=1e-2, alpha=32.0, delta=0.1):
        super().__init__()
        self.proxies = nn.Parameter(nn.init.kaiming_normal_(torch.empty(n_classes, embed_dim), mode="fan_out"))
        self.lr = lr
        self.alpha = alpha
        self.delta = delta

    def forward(self, batch, labels):
        similarities = (F.normalize(batch, dim=1) @ F.normalize(self.proxies, dim=1).T).T
        of_class = F.one_hot(labels, len(self.proxies)).bool().T
        with_positive = of_class.any(dim=1)
        positive = log1p_sum_exp(-self.alpha * (similarities - self.delta), of_class)[with_positive].mean()
        negative = log1p_sum_exp(self.alpha * (similarities + self.delta), ~of_class).mean()
        return positive + negative
