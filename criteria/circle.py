from torch.nn import functional as F

from criteria.base import CRITERIA, Criterion
from criteria.common import anchors_with_pairs, masked_logsumexp, reference_embeddings


@CRITERIA.register("circle")
class Circle(Criterion):
    """Circle loss (Sun et al., CVPR 2020), pair form, on cosine similarities s, with the
    paper's fine-grained retrieval setting (m 0.4, gamma 80). Per anchor with positives and
    negatives:
        softplus(logsumexp_p(-gamma a_p (s_p - (1 - m))) + logsumexp_n(gamma a_n (s_n - m))),
    a_p = relu(1 + m - s_p), a_n = relu(s_n + m) held constant (no gradient); mean over anchors.
    """
    takes_references = True

    def __init__(self, margin=0.4, gamma=80.0):
        super().__init__()
        self.margin = margin
        self.gamma = gamma

    def forward(self, batch, labels, references=None):
        anchors, positives, negatives = anchors_with_pairs(labels, references)
        if len(anchors) == 0:
            return batch.sum() * 0
        similarities = (F.normalize(batch[anchors], dim=1)
                        @ F.normalize(reference_embeddings(batch, references), dim=1).T)
        positive_weight = F.relu(1 + self.margin - similarities.detach())
        negative_weight = F.relu(similarities.detach() + self.margin)
        positive_logits = -self.gamma * positive_weight * (similarities - (1 - self.margin))
        negative_logits = self.gamma * negative_weight * (similarities - self.margin)
        return F.softplus(masked_logsumexp(positive_logits, positives[anchors])
                          + masked_logsumexp(negative_logits, negatives[anchors])).mean()
