import math

import torch
from torch import nn
from torch.nn import functional as F

from criteria.registry import register_criterion


@register_criterion("softmax")
class NormalizedSoftmax(nn.Module):
    """Normalised softmax (Zhai & Wu, "Classification is a strong baseline for deep metric
    learning", BMVC 2019), as in Revisiting-DML: cross-entropy of cos(x, w_c) / temperature
    over learnt class weights w_c.
    """
    hyperparameters = {"lr": 1e-5, "temperature": 0.05}

    def __init__(self, n_classes, embed_dim, lr, temperature):
        super().__init__()
        bound = 1 / math.sqrt(embed_dim)
        self.class_map = nn.Parameter(torch.empty(n_classes, embed_dim).uniform_(-bound, bound))
        self.lr = lr
        self.temperature = temperature

    def optim_groups(self):
        return [{"params": [self.class_map], "lr": self.lr, "weight_decay": 0.0}]

    def forward(self, batch, labels):
        cosines = F.normalize(batch, dim=1) @ F.normalize(self.class_map, dim=1).T
        return F.cross_entropy(cosines / self.temperature, labels)
