"""The contracts of a loss and of a batch miner, and the tables of both by name.

A loss is a `Criterion`: forward(batch, labels) -> a scalar; a pair or triplet loss that sets
`takes_references` also takes forward(batch, labels, references) and compares the batch's anchors
with those references (a cross-batch memory) instead of with the batch. The keyword defaults of its
constructor are its hyperparameters, with the values of its paper (or of Revisiting-DML where
that is the reference); parameters.py turns each into a `--loss_<name>_<param>` flag, so every
default lives in one place, and `Loss()` builds the loss as a plain library call. Four
constructor arguments come from criteria.select instead of flags (SUPPLIED): `miner` (for a
loss over mined tuples, which says the kind it needs in `mines`), `distance`, `n_classes` and
`embed_dim`. Learnt class parameters (proxies, centres, margins) train at the loss's own `lr`,
without weight decay (`optim_groups`).

What a loss needs of its training split to form a positive and a negative pair, it declares in
`needs` (NEEDS): "pairs" of images (two images of a class, and an image of another class), or
"classes" only (two classes: an image and its class's learnt parameters, and another class's);
criteria.check_training_labels holds a split to it before a run starts.

A batch miner is a `Miner`: miner(batch, labels, references=None) -> tuples of the kind it declares
in `returns`, their positives and negatives indexing the references (by default the batch).
"""
import torch
from torch import nn

from criteria import distances
from registry import Registry, keyword_defaults

SUPPLIED = ("miner", "distance", "n_classes", "embed_dim", "class_name")
DEFAULT_CLASSES = 100  # CUB200's training classes: a loss with class parameters can be built bare
DEFAULT_EMBED_DIM = 128  # the paper's
# What a miner returns, by `returns`:
#   "triplets": (anchors, positives, negatives), index tensors of equal length;
#   "pairs":    (anchors, positives, negative mask), the mask anchors x batch;
#   "sets":     (anchors, positive mask, negative mask).
TUPLE_KINDS = ("triplets", "pairs", "sets")
# What a training split must hold, by a loss's `needs`: a pair loss's positive is two images of a
# class; a proxy or classification loss pairs an image with its class's parameters.
NEEDS = {"pairs": "2 classes or more, one of them of 2 images or more", "classes": "2 classes or more"}

CRITERIA = Registry("loss")
# In the order of definition: the first miner of the kind a loss mines is its default.
MINERS = Registry("miner", order=None)


class Miner:
    """Picks the tuples of a batch a loss is computed on; sees no gradient."""
    returns = "triplets"
    hyperparameters = {}  # filled from the constructor's defaults

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        assert cls.returns in TUPLE_KINDS, cls
        cls.hyperparameters = keyword_defaults(cls, SUPPLIED)

    def __call__(self, batch, labels, references=None):
        raise NotImplementedError


class Criterion(nn.Module):
    """A loss: forward(batch, labels) -> scalar. See the module's docstring for the contract."""
    mines = None  # the kind of tuples (a Miner's `returns`) the loss is computed on; None: it mines its own
    # forward(batch, labels, references) compares the anchors with references (criteria.common.References):
    # a cross-batch memory can serve it (criteria/memory.py).
    takes_references = False
    needs = "pairs"  # what its training split must hold (NEEDS)
    lr = None  # learning rate of its learnt class parameters, if it has any
    hyperparameters = {}  # filled from the constructor's defaults

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.hyperparameters = keyword_defaults(cls, SUPPLIED)

    @classmethod
    def miner_names(cls):
        """The registered miners this loss can use, its default first."""
        return [name for name, miner in MINERS.items() if miner.returns == cls.mines] if cls.mines else []

    @classmethod
    def default_miner(cls):
        names = cls.miner_names()
        return names[0] if names else None

    def use_miner(self, miner):
        """`miner`, or the loss's default miner with its default settings."""
        return miner if miner is not None else MINERS.get(self.default_miner())()

    @staticmethod
    def use_distance(distance):
        """`distance`, or the default one (euclidean)."""
        return distance if distance is not None else distances.DISTANCES.get(distances.DEFAULT)

    @staticmethod
    def class_parameters(rows, embed_dim, bound):
        """Learnt class weights (rows x embed_dim) drawn uniformly in [-bound, bound]."""
        return nn.Parameter(torch.empty(rows, embed_dim).uniform_(-bound, bound))

    def optim_groups(self):
        """The loss's learnt parameters, at its own lr and without weight decay."""
        parameters = [parameter for parameter in self.parameters() if parameter.requires_grad]
        return [{"params": parameters, "lr": self.lr, "weight_decay": 0.0}] if parameters else []
