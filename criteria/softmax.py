import math

from torch.nn import functional as F

from criteria.base import CRITERIA, DEFAULT_CLASSES, DEFAULT_EMBED_DIM, Criterion


@CRITERIA.register("softmax")
class NormalizedSoftmax(Criterion):
    """Normalised softmax (Zhai & Wu, "Classification is a strong baseline for deep metric
    learning", BMVC 2019), as in Revisiting-DML: cross-entropy of cos(x, w_c) / temperature
    over learnt class weights w_c.
    """

    needs = "classes"

    def __init__(self, n_classes=DEFAULT_CLASSES, embed_dim=DEFAULT_EMBED_DIM, lr=1e-5, temperature=0.05):
        super().__init__()
        self.class_map = self.class_parameters(n_classes, embed_dim, bound=1 / math.sqrt(embed_dim))
        self.lr = lr
        self.temperature = temperature

    def forward(self, batch, labels):
        cosines = F.normalize(batch, dim=1) @ F.normalize(self.class_map, dim=1).T
        return F.cross_entropy(cosines / self.temperature, labels)
