"""`--loss pml:<LossClass>`: a loss of pytorch-metric-learning (Musgrave et al.), when that package
is installed, behind this package's interface, so that --PSD and --OBDP apply to it as well.

Its constructor arguments come as JSON in --loss_pml_options; num_classes and embedding_size
are filled in when it asks for them. Its learnt parameters (proxies) train at --loss_pml_lr.
"""
import importlib
import inspect
import json

from torch import nn

from criteria.base import DEFAULT_CLASSES, DEFAULT_EMBED_DIM, Criterion
from errors import UserError

PREFIX = "pml:"


def loss_class(class_name):
    try:
        losses = importlib.import_module("pytorch_metric_learning.losses")
    except ImportError:
        raise UserError(f"--loss {PREFIX}{class_name} needs pytorch-metric-learning: "
                        "pip install pytorch-metric-learning") from None
    found = getattr(losses, class_name, None)
    if not (inspect.isclass(found) and issubclass(found, nn.Module)):
        known = sorted(name for name, value in vars(losses).items()
                       if inspect.isclass(value) and issubclass(value, nn.Module) and name.endswith("Loss"))
        raise UserError(f"pytorch-metric-learning has no loss {class_name!r}; choose one of {', '.join(known)}")
    return found


def needs(class_name):
    """What the loss needs of a training split (criteria.base.NEEDS): a loss with learnt class
    parameters takes num_classes and needs classes only; the others compare pairs of images."""
    return "classes" if "num_classes" in inspect.signature(loss_class(class_name)).parameters else "pairs"


class PMLCriterion(Criterion):
    """A pytorch-metric-learning loss, called as loss(batch, labels)."""

    def __init__(self, class_name, lr=5e-4, options="{}", n_classes=DEFAULT_CLASSES, embed_dim=DEFAULT_EMBED_DIM):
        super().__init__()
        cls = loss_class(class_name)
        try:
            arguments = json.loads(options)
        except json.JSONDecodeError as error:
            raise UserError(f"--loss_pml_options is not JSON ({error}); e.g. '{{\"margin\": 0.1}}'") from None
        if not isinstance(arguments, dict):
            raise UserError("--loss_pml_options must be a JSON object, e.g. '{\"margin\": 0.1}'")
        accepted = inspect.signature(cls).parameters
        if "num_classes" in accepted:
            arguments.setdefault("num_classes", n_classes)
        if "embedding_size" in accepted:
            arguments.setdefault("embedding_size", embed_dim)
        try:
            self.loss = cls(**arguments)
        except TypeError as error:
            raise UserError(f"cannot build {class_name} from --loss_pml_options: {error}") from None
        self.lr = lr

    def forward(self, batch, labels):
        return self.loss(batch, labels)
