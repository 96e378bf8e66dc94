"""Training criteria by name: `select` builds the loss named `loss` from values, wrapped in the
self-distillation of criteria/self_distillation.py when `distillation` is given.

The contract of a loss and of a miner is in criteria/base.py; docs/extending.md shows how to
add one.
"""
import inspect

from criteria import (  # noqa: F401  (the loss and miner modules fill the registries)
    angular,
    arcface,
    circle,
    contrastive,
    distances,
    eml,
    histogram,
    lifted,
    margin,
    miners,
    multisimilarity,
    npair,
    pml,
    proxyanchor,
    proxynca,
    quadruplet,
    snr,
    softmax,
    softtriplet,
    subcenter_arcface,
    triplet,
)
from criteria.base import CRITERIA, DEFAULT_CLASSES, DEFAULT_EMBED_DIM, MINERS, Criterion, Miner
from criteria.self_distillation import Distillation, SelfDistilledCriterion, Teacher, distillation_loss
from errors import UserError

# The paper's scripts name the self-distilled variant `<loss>_obd_sd`; the flags decide what it does.
PAPER_SUFFIX = "_obd_sd"
# Criteria that are not registered names: pml:<LossClass> (its flags are --loss_pml_lr, --loss_pml_options).
EXTERNAL = {"pml": pml.PMLCriterion}

__all__ = ["CRITERIA", "MINERS", "EXTERNAL", "Criterion", "Distillation", "Miner", "SelfDistilledCriterion",
           "Teacher", "distillation_loss", "OptionError", "names", "base_name", "criterion_class", "select",
           "check_miner", "check_distance"]


class OptionError(UserError, ValueError):
    """An option the chosen loss cannot take. Its message names the option as this package's
    argument (miner, distance); `naming(flag)` gives the same message naming a command-line flag."""

    def __init__(self, template, option):
        super().__init__(template.format(option=option))
        self.template = template

    def naming(self, flag):
        return self.template.format(option=flag)


def names():
    """The registered loss names; each is also accepted as <name>_obd_sd, and pml:<LossClass> too."""
    return CRITERIA.names()


def base_name(loss):
    return loss[: -len(PAPER_SUFFIX)] if loss.endswith(PAPER_SUFFIX) else loss


def criterion_class(loss):
    """The class of a loss name (a registered one, <name>_obd_sd or pml:<LossClass>)."""
    name = base_name(loss)
    if name.startswith(pml.PREFIX):
        pml.loss_class(name[len(pml.PREFIX):])
        return EXTERNAL["pml"]
    return CRITERIA.get(name)


def check_miner(loss, miner):
    """The miner a loss will use (its default for None), or OptionError when it cannot use `miner`."""
    cls = criterion_class(loss)
    supported = cls.miner_names() if issubclass(cls, Criterion) else []
    if miner is None:
        return supported[0] if supported else None
    if not supported:
        raise OptionError(f"{base_name(loss)} mines its own pairs and takes no {{option}}; drop it", "miner")
    if miner not in supported:
        raise OptionError(f"{base_name(loss)} works with {{option}} {' or '.join(supported)}, not {miner}", "miner")
    return miner


def check_distance(loss, distance):
    """The distance a loss will use (None: it has its own similarity), or OptionError."""
    takes_distance = "distance" in inspect.signature(criterion_class(loss)).parameters
    if distance is None:
        return distances.DEFAULT if takes_distance else None
    if not takes_distance:
        raise OptionError(f"{base_name(loss)} has its own similarity and takes no {{option}}; drop it", "distance")
    distances.DISTANCES.get(distance)
    return distance


def select(loss="multisimilarity", hyperparameters=None, miner=None, miner_hyperparameters=None, distance=None,
           n_classes=DEFAULT_CLASSES, embed_dim=DEFAULT_EMBED_DIM, distillation=None):
    """The loss `loss` (a registered name, <name>_obd_sd or pml:<LossClass>) with its
    `hyperparameters` (default: its constructor's), the miner and distance it uses (default: its
    own), and the number of classes and embedding size its class parameters need, wrapped in
    self-distillation when `distillation` (a Distillation) is given."""
    cls = criterion_class(loss)
    kwargs = dict(hyperparameters or {})
    accepted = inspect.signature(cls).parameters
    if cls is EXTERNAL["pml"]:
        kwargs["class_name"] = base_name(loss)[len(pml.PREFIX):]
    miner_name = check_miner(loss, miner)
    if miner_name is not None:
        kwargs["miner"] = MINERS.get(miner_name)(**(miner_hyperparameters or {}))
    distance_name = check_distance(loss, distance)
    if distance_name is not None:
        kwargs["distance"] = distances.DISTANCES.get(distance_name)
    for name, value in (("n_classes", n_classes), ("embed_dim", embed_dim)):
        if name in accepted:
            kwargs[name] = value
    return SelfDistilledCriterion(cls(**kwargs), distillation)
