"""Training criteria by name: `select(opt, n_classes)` builds the one named by `opt.loss`,
wrapped in the self-distillation of criteria/self_distillation.py when `--PSD` is on.

A criterion class declares `hyperparameters` (its --loss_<name>_<param> flags), and, when it
uses them, `miners` / `default_miner` and the constructor arguments `miner`, `distance`
(from --distance), `n_classes` and `embed_dim`, which `select` fills in.
"""
import argparse
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
from criteria.registry import CRITERIA, MINERS
from criteria.self_distillation import SelfDistilledCriterion, distillation_loss
from errors import UserError

# The paper's scripts name the self-distilled variant `<loss>_obd_sd`; the flags decide what it does.
PAPER_SUFFIX = "_obd_sd"
# Hyperparameter flags of criteria that are not registered names (--loss_pml_lr, --loss_pml_options).
EXTERNAL = {"pml": pml.PMLCriterion}

__all__ = ["CRITERIA", "MINERS", "EXTERNAL", "SelfDistilledCriterion", "distillation_loss", "OptionError",
           "names", "base_name", "loss_name", "select", "check_miner", "check_distance"]


class OptionError(UserError, ValueError):
    """A flag the chosen criterion cannot use: an argparse error at parsing, a one-line error in main."""


def names():
    """Every accepted --loss value, besides pml:<LossClass>."""
    return sorted(CRITERIA) + sorted(name + PAPER_SUFFIX for name in CRITERIA)


def base_name(loss):
    return loss[: -len(PAPER_SUFFIX)] if loss.endswith(PAPER_SUFFIX) else loss


def criterion_class(loss):
    name = base_name(loss)
    return EXTERNAL["pml"] if name.startswith(pml.PREFIX) else CRITERIA[name]


def loss_name(value):
    """The argparse type of --loss: a registered name, <name>_obd_sd or pml:<LossClass>."""
    name = base_name(value)
    if name.startswith(pml.PREFIX):
        try:
            pml.loss_class(name[len(pml.PREFIX):])
        except UserError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    elif name not in CRITERIA:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(names())}, "
                                         f"or {pml.PREFIX}<LossClass> of pytorch-metric-learning)")
    return value


def check_miner(loss, batch_mining):
    """The miner a criterion will use, or OptionError (a ValueError) when it cannot use the one asked for."""
    name, cls = base_name(loss), criterion_class(loss)
    supported = getattr(cls, "miners", ())
    if batch_mining is None:
        return getattr(cls, "default_miner", None)
    if not supported:
        raise OptionError(f"{name} mines its own pairs and takes no --batch_mining; drop the flag")
    if batch_mining not in supported:
        raise OptionError(f"{name} works with --batch_mining {' or '.join(supported)}, not {batch_mining}")
    return batch_mining


def check_distance(loss, distance):
    """The distance a criterion will use (None: it has its own), or OptionError."""
    takes_distance = "distance" in inspect.signature(criterion_class(loss)).parameters
    if distance is None:
        return distances.DEFAULT if takes_distance else None
    if not takes_distance:
        raise OptionError(f"{base_name(loss)} has its own similarity and takes no --distance; drop the flag")
    return distance


def select(opt, n_classes=None):
    name, cls = base_name(opt.loss), criterion_class(opt.loss)
    flag_prefix = "loss_pml" if cls is EXTERNAL["pml"] else f"loss_{name}"
    kwargs = {param: getattr(opt, f"{flag_prefix}_{param}") for param in cls.hyperparameters}
    accepted = inspect.signature(cls).parameters
    if cls is EXTERNAL["pml"]:
        kwargs["class_name"] = name[len(pml.PREFIX):]
    miner_name = check_miner(opt.loss, opt.batch_mining)
    if miner_name is not None:
        miner_class = MINERS[miner_name]
        kwargs["miner"] = miner_class(**{param: getattr(opt, f"miner_{miner_name}_{param}")
                                         for param in miner_class.hyperparameters})
    distance_name = check_distance(opt.loss, opt.distance)
    if distance_name is not None:
        kwargs["distance"] = distances.DISTANCES[distance_name]
    if "n_classes" in accepted:
        if n_classes is None and accepted["n_classes"].default is inspect.Parameter.empty:
            raise ValueError(f"{name} learns per-class parameters: pass n_classes")
        kwargs["n_classes"] = n_classes
    if "embed_dim" in accepted:
        kwargs["embed_dim"] = opt.embed_dim
    distillation = None
    if opt.PSD:
        distillation = {"kd_tau": opt.kd_tau, "kd_lambda": opt.kd_lambda, "n_epochs": opt.n_epochs,
                        "diffusion_w": opt.diffusion_w if opt.OBDP else 0.0,
                        "diffusion_tau": opt.diffusion_tau,
                        "diffusion_options": {"norm": opt.diffusion_norm, "k": opt.diffusion_k,
                                              "knn": opt.diffusion_knn, "gamma": opt.diffusion_gamma,
                                              "solver": opt.diffusion_solver, "tol": opt.diffusion_tol,
                                              "max_iters": opt.diffusion_iters}}
    return SelfDistilledCriterion(cls(**kwargs), distillation)
