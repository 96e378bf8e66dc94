"""Training criteria by name: `select` builds the loss that LossSettings describe, wrapped in the
self-distillation of criteria/self_distillation.py when a Distillation with PSD is given.

The contract of a loss and of a miner is in criteria/base.py; docs/extending.md shows how to
add one.
"""
import inspect
from dataclasses import dataclass, field

import diffusion
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
from criteria.base import (
    CRITERIA,
    DEFAULT_CLASSES,
    DEFAULT_EMBED_DIM,
    MINERS,
    Criterion,
    Miner,
)
from criteria.memory import CrossBatchMemory
from criteria.self_distillation import (
    Distillation,
    SelfDistilledCriterion,
    Teacher,
    distillation_loss,
)
from errors import SettingError, UserError

# The paper's scripts name the self-distilled variant `<loss>_obd_sd`; the flags decide what it does.
PAPER_SUFFIX = "_obd_sd"
# Criteria that are not registered names: pml:<LossClass> (its flags are --loss_pml_lr, --loss_pml_options).
EXTERNAL = {"pml": pml.PMLCriterion}

__all__ = ["CRITERIA", "MINERS", "EXTERNAL", "CrossBatchMemory", "Criterion", "Distillation", "LossSettings", "Miner",
           "SelfDistilledCriterion", "Teacher", "distillation_loss", "OptionError", "names", "base_name",
           "criterion_class", "select", "check_miner", "check_distance"]


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


@dataclass(frozen=True)
class LossSettings:
    """The training loss: its name (a registered one or pml:<LossClass>; <name>_obd_sd, the released
    scripts' name, is read as <name>), its
    miner (`batch_mining`) and `distance` (None: the loss's own), and its and its miner's
    hyperparameters (their constructor defaults where not given); `xbm_size` > 0 compares the batch
    with a cross-batch memory of that many images after `xbm_start` steps (criteria/memory.py).
    Resolved at construction: the
    miner and distance in use are named, every hyperparameter is filled in and typed as its
    default, so equal settings compare equal; an option the loss cannot take is an OptionError."""
    loss: str = "multisimilarity"
    batch_mining: str | None = None
    distance: str | None = None
    hyperparameters: dict = field(default_factory=dict)
    miner_hyperparameters: dict = field(default_factory=dict)
    xbm_size: int = 0
    xbm_start: int = 0

    def __post_init__(self):
        cls = criterion_class(self.loss)
        if self.xbm_size < 0 or self.xbm_start < 0:
            raise SettingError(f"xbm_size and xbm_start must be 0 or more, got {self.xbm_size} and {self.xbm_start}",
                               ["xbm_size", "xbm_start"])
        if self.xbm_size and not getattr(cls, "takes_references", False):
            takes = sorted(name for name, entry in CRITERIA.items() if entry.takes_references)
            raise SettingError(f"xbm_size: {base_name(self.loss)} compares no pairs of images, so a cross-batch memory "
                               f"has nothing to serve; use one of {', '.join(takes)}, or drop xbm_size", ["xbm_size"])
        object.__setattr__(self, "loss", base_name(self.loss))  # <name>_obd_sd is the same loss
        for name, check in (("batch_mining", check_miner), ("distance", check_distance)):
            try:
                object.__setattr__(self, name, check(self.loss, getattr(self, name)))
            except OptionError as error:
                raise SettingError(error.naming(name), [name]) from None
        miner = self.batch_mining
        object.__setattr__(self, "hyperparameters", _filled(cls.hyperparameters, self.hyperparameters,
                                                            f"loss {base_name(self.loss)}"))
        miner_defaults = MINERS.get(miner).hyperparameters if miner else {}
        object.__setattr__(self, "miner_hyperparameters", _filled(miner_defaults, self.miner_hyperparameters,
                                                                  f"miner {miner}"))


def _filled(defaults, given, owner):
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise SettingError(f"the {owner} has no hyperparameter {', '.join(unknown)}; it has "
                           f"{', '.join(defaults) or 'none'}")
    return {name: _typed(default, given.get(name, default)) for name, default in defaults.items()}


def _typed(default, value):
    """`value` as the type of its default (a YAML 40 for a float hyperparameter is 40.0)."""
    if isinstance(default, bool) or default is None or isinstance(value, bool):
        return value
    return type(default)(value) if isinstance(default, (int, float)) and isinstance(value, (int, float)) else value


def select(settings: LossSettings = LossSettings(), n_classes=DEFAULT_CLASSES, embed_dim=DEFAULT_EMBED_DIM,
           distillation: Distillation | None = None, n_epochs=150, n_images=None):
    """The loss `settings` describe, with the number of classes and embedding size its class
    parameters need, wrapped in self-distillation when `distillation` (with PSD) is given;
    `n_epochs` sets the pace of its progressive weight; `n_images`, the training split's size,
    bounds a cross-batch memory."""
    memory = _memory(settings, embed_dim, distillation, n_images)
    cls = criterion_class(settings.loss)
    kwargs = dict(settings.hyperparameters)
    accepted = inspect.signature(cls).parameters
    if cls is EXTERNAL["pml"]:
        kwargs["class_name"] = base_name(settings.loss)[len(pml.PREFIX):]
    if settings.batch_mining is not None:
        kwargs["miner"] = MINERS.get(settings.batch_mining)(**settings.miner_hyperparameters)
    if settings.distance is not None:
        kwargs["distance"] = distances.DISTANCES.get(settings.distance)
    for name, value in (("n_classes", n_classes), ("embed_dim", embed_dim)):
        if name in accepted:
            kwargs[name] = value
    return SelfDistilledCriterion(cls(**kwargs), distillation, n_epochs, memory)


def _memory(settings, embed_dim, distillation, n_images):
    if not settings.xbm_size:
        return None
    if n_images is not None and settings.xbm_size > n_images:
        raise SettingError(f"xbm_size {settings.xbm_size} is larger than the training split ({n_images} images): "
                           f"the memory would hold copies of one image; use at most {n_images}", ["xbm_size"])
    diffused = distillation is not None and distillation.PSD and distillation.OBDP
    graph = distillation.diffusion if diffused else None
    if diffused and (graph.k is None or not diffusion.SOLVERS.get(graph.solver).iterative):
        raise SettingError("OBDP over a cross-batch memory needs a kNN graph and an iterative solver (a dense graph "
                           "of M entries costs M^2): add diffusion_k 10 and diffusion_solver iterative",
                           ["diffusion_k", "diffusion_solver"])
    return CrossBatchMemory(settings.xbm_size, embed_dim, settings.xbm_start, teacher=diffused,
                            k=distillation.diffusion.k if diffused else None)

