
from criteria.base import CRITERIA, Criterion
from criteria.common import log1p_sum_exp, reference_embeddings


@CRITERIA.register("npair")
class NPair(Criterion):
    """N-pair loss (Sohn, NeurIPS 2016), as in Revisiting-DML: the mean over anchors a with
    positive p of log(1 + sum_n exp(f_a . f_n - f_a . f_p)), n over the other classes, plus l2
    times the mean embedding norm (inner products of unnormalised embeddings).
    """
    mines = "pairs"
    takes_references = True

    def __init__(self, miner=None, l2=0.005):
        super().__init__()
        self.miner = self.use_miner(miner)
        self.l2 = l2

    def forward(self, batch, labels, references=None):
        anchors, positives, negative_mask = self.miner(batch, labels, references)
        refs = reference_embeddings(batch, references)
        if len(anchors) == 0:
            return batch.sum() * 0
        logits = npair_logits(batch[anchors], refs[positives], refs)
        return log1p_sum_exp(logits, negative_mask).mean() + self.l2 * batch.norm(dim=1).mean()


def npair_logits(anchor_embeddings, positive_embeddings, references):
    """f_a . f_n - f_a . f_p for every anchor a (rows) and sample n (columns)."""
    return anchor_embeddings @ references.T - (anchor_embeddings * positive_embeddings).sum(dim=1, keepdim=True)
