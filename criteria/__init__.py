"""Training criteria by name: `select` builds the loss that LossSettings describe, wrapped in the
self-distillation of criteria/self_distillation.py when a Distillation with PSD is given. A loss
named a+b is the weighted sum of its criteria (criteria/mixture.py), distilled once.

The contract of a loss and of a miner is in criteria/base.py; docs/extending.md shows how to
add one.
"""
import inspect
import math
from dataclasses import dataclass, field

import numpy as np

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
    NEEDS,
    Criterion,
    Miner,
)
from criteria.memory import CrossBatchMemory
from criteria.mixture import SEPARATOR, Mixture
from criteria.self_distillation import (
    Distillation,
    SelfDistilledCriterion,
    Teacher,
    distillation_loss,
)
from errors import SettingError, UserError, counted

# The paper's scripts name the self-distilled variant `<loss>_obd_sd`; the flags decide what it does.
PAPER_SUFFIX = "_obd_sd"
# Criteria that are not registered names: pml:<LossClass> (its flags are --loss_pml_lr, --loss_pml_options).
EXTERNAL = {"pml": pml.PMLCriterion}

__all__ = ["CRITERIA", "MINERS", "EXTERNAL", "CrossBatchMemory", "Criterion", "Distillation", "LossSettings", "Miner",
           "Mixture", "SelfDistilledCriterion", "Teacher", "distillation_loss", "OptionError", "names", "base_name",
           "split_loss", "criterion_class", "select", "check_miner", "check_distance", "needs",
           "check_training_labels"]


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


def split_loss(loss):
    """The base names of the criteria `loss` names: itself, or each of a mixture a+b (criteria/mixture.py).
    Each must exist (UnknownName, or the UserError of a pml: name); a criterion named twice is a
    SettingError, and so are two pml: criteria, which would share the --loss_pml_* flags."""
    names = [base_name(part) for part in loss.split(SEPARATOR)]
    for name in names:
        criterion_class(name)
    flags = [_flag_name(name) for name in names]
    twice = next((name for name, flag in zip(names, flags) if flags.count(flag) > 1), None)
    if twice is not None:
        flag = _flag_name(twice)
        shown = "a pml: criterion" if flag == "pml" else twice
        raise SettingError(f"loss {loss} names {shown} twice: a mixture takes each criterion once, with its own "
                           f"--loss_{flag}_* flags", ["loss"])
    return names


def _flag_name(name):
    """The <name> of a criterion's --loss_<name>_<param> flags."""
    return "pml" if name.startswith(pml.PREFIX) else name


def criterion_class(loss):
    """The class of a loss name (a registered one, <name>_obd_sd or pml:<LossClass>); a mixture's
    criteria are named one by one (split_loss)."""
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


def needs(loss):
    """What a criterion (a name of split_loss) needs of its training split: "pairs" or "classes" (NEEDS)."""
    cls = criterion_class(loss)
    return pml.needs(base_name(loss)[len(pml.PREFIX):]) if cls is EXTERNAL["pml"] else cls.needs


def check_training_labels(settings: "LossSettings", labels, split="the training split"):
    """A UserError, before anything trains, when a training split of these `labels` cannot give the
    loss a positive and a negative pair: its loss would be 0 at every step. A mixture needs what
    its most demanding criterion needs. `split` names the split in the message."""
    sizes = np.unique(np.asarray(labels), return_counts=True)[1]
    pairs = [name for name in settings.names if needs(name) == "pairs"]
    kind = "pairs" if pairs else "classes"
    if len(sizes) >= 2 and (kind == "classes" or sizes.max() >= 2):
        return
    if len(sizes) >= 2:
        held, fix = f"{len(sizes)} classes of 1 image each", "give some classes 2 images or more"
    else:
        held, fix = f"{counted(len(sizes), 'class', 'classes')} ({counted(len(labels), 'image', 'images')})", \
            "train on more classes"
    raise UserError(f"{split} holds {held}, so {(pairs or settings.names)[0]} would train nothing: to form a positive "
                    f"and a negative pair it needs {NEEDS[kind]}; {fix}")


@dataclass(frozen=True)
class LossSettings:
    """The training loss: its name (a registered one or pml:<LossClass>; <name>_obd_sd, the released
    scripts' name, is read as <name>), its
    miner (`batch_mining`) and `distance` (None: the loss's own), and its and its miner's
    hyperparameters (their constructor defaults where not given); `xbm_size` > 0 compares the batch
    with a cross-batch memory of that many images after `xbm_start` steps (criteria/memory.py).
    Resolved at construction: the
    miner and distance in use are named, every hyperparameter is filled in and typed as its
    default, so equal settings compare equal; an option the loss cannot take is an OptionError.

    A mixture, `loss` a+b (criteria/mixture.py), is the sum of its criteria weighted by
    `loss_weights`, one positive weight per criterion (empty: 1 each, which is how all ones are
    kept); one loss may take a single weight. Its `hyperparameters` are {criterion: its
    hyperparameters}, its `miner_hyperparameters` {miner: its hyperparameters} for each miner its
    criteria use. `batch_mining` applies to every criterion that mines tuples (each its default
    when None; resolved to the one miner they all use, else None), `distance` to every criterion
    that takes one. A memory (`xbm_size`) needs every criterion to take references.
    `members()` gives each criterion's own settings."""
    loss: str = "multisimilarity"
    batch_mining: str | None = None
    distance: str | None = None
    hyperparameters: dict = field(default_factory=dict)
    miner_hyperparameters: dict = field(default_factory=dict)
    xbm_size: int = 0
    xbm_start: int = 0
    loss_weights: tuple[float, ...] = ()

    def __post_init__(self):
        names = split_loss(self.loss)
        if self.xbm_size < 0 or self.xbm_start < 0:
            raise SettingError(f"xbm_size and xbm_start must be 0 or more, got {self.xbm_size} and {self.xbm_start}",
                               ["xbm_size", "xbm_start"])
        refusing = [name for name in names if not getattr(criterion_class(name), "takes_references", False)]
        if self.xbm_size and refusing:
            takes = ", ".join(sorted(name for name, entry in CRITERIA.items() if entry.takes_references))
            if len(names) == 1:
                raise SettingError(f"xbm_size: {names[0]} compares no pairs of images, so a cross-batch memory "
                                   f"has nothing to serve; use one of {takes}, or drop xbm_size", ["xbm_size"])
            raise SettingError(f"xbm_size: {refusing[0]} compares no pairs of images, and a mixture takes a "
                               f"cross-batch memory only when all its criteria do ({takes}); drop xbm_size",
                               ["xbm_size"])
        object.__setattr__(self, "loss", SEPARATOR.join(names))  # <name>_obd_sd is the same loss
        object.__setattr__(self, "loss_weights", _weights(self.loss_weights, self.loss, len(names)))
        if len(names) > 1:
            self._resolve_mixture(names)
            return
        cls = criterion_class(self.loss)
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

    @property
    def names(self):
        """The criteria of the loss: one, or those of a mixture in order."""
        return tuple(self.loss.split(SEPARATOR))

    @property
    def is_mixture(self):
        return len(self.names) > 1

    @property
    def weights(self):
        """The weight of each criterion (loss_weights, or 1 each)."""
        return self.loss_weights or (1.0,) * len(self.names)

    def members(self):
        """The settings of each criterion on its own (without the memory): these for one loss."""
        if not self.is_mixture:
            return (self,)
        members = []
        for name in self.names:
            miner = check_miner(name, None)
            if miner is not None and self.batch_mining is not None:
                miner = self.batch_mining
            distance = self.distance if check_distance(name, None) is not None else None
            members.append(LossSettings(name, miner, distance, self.hyperparameters[name],
                                        self.miner_hyperparameters[miner] if miner else {}))
        return tuple(members)

    def _resolve_mixture(self, names):
        chosen = {name: check_miner(name, None) for name in names}  # the defaults; None: it mines its own
        if self.batch_mining is not None:
            if not any(chosen.values()):
                raise SettingError(f"none of {', '.join(names)} uses a batch_mining (each mines its own pairs); "
                                   "drop it", ["batch_mining"])
            for name in names:
                if chosen[name] is not None:
                    try:
                        chosen[name] = check_miner(name, self.batch_mining)
                    except OptionError as error:
                        raise SettingError(f"{error.naming('batch_mining')} (in a mixture it applies to every "
                                           "criterion that mines tuples)", ["batch_mining"]) from None
        used = list(dict.fromkeys(miner for miner in chosen.values() if miner is not None))
        object.__setattr__(self, "batch_mining", used[0] if len(used) == 1 else None)
        takes_distance = [name for name in names if check_distance(name, None) is not None]
        if self.distance is not None:
            if not takes_distance:
                raise SettingError(f"none of {', '.join(names)} takes a distance (each has its own similarity); "
                                   "drop it", ["distance"])
            distances.DISTANCES.get(self.distance)
        object.__setattr__(self, "distance", (self.distance or distances.DEFAULT) if takes_distance else None)
        object.__setattr__(self, "hyperparameters", {
            name: _filled(criterion_class(name).hyperparameters, given, f"loss {name}")
            for name, given in _keyed(self.hyperparameters, names, f"mixture {self.loss}", "criteria").items()})
        object.__setattr__(self, "miner_hyperparameters", {
            miner: _filled(MINERS.get(miner).hyperparameters, given, f"miner {miner}")
            for miner, given in _keyed(self.miner_hyperparameters, used, f"mixture {self.loss}", "miners").items()})


def _weights(given, loss, count):
    """loss_weights checked against the `count` criteria of `loss`: () for 1 each."""
    given = () if given is None else tuple(given) if isinstance(given, (list, tuple)) else (given,)
    if given and len(given) != count:
        values, criteria = ("value" if len(given) == 1 else "values"), ("criterion" if count == 1 else "criteria")
        raise SettingError(f"loss_weights has {len(given)} {values} but loss {loss} names {count} {criteria}: give "
                           "one weight per criterion, in their order (default: 1 each)", ["loss_weights", "loss"])
    if not all(isinstance(weight, (int, float)) and not isinstance(weight, bool) for weight in given):
        raise SettingError(f"loss_weights takes numbers, got {list(given)}", ["loss_weights"])
    bad = [weight for weight in given if not (math.isfinite(weight) and weight > 0)]
    if bad:
        hint = "; leave the criterion out rather than weigh it 0" if bad[0] == 0 else ""
        raise SettingError(f"loss_weights must be positive and finite, got {bad[0]}{hint}", ["loss_weights"])
    return () if all(weight == 1 for weight in given) else tuple(float(weight) for weight in given)


def _keyed(given, keys, owner, kind):
    """The dict `given` of per-criterion (or per-miner) dicts, one for each of `keys`."""
    unknown = sorted(set(given) - set(keys))
    if unknown:
        raise SettingError(f"the {owner} keys its hyperparameters by its {kind} ({', '.join(keys) or 'none'}), "
                           f"not {', '.join(map(str, unknown))}")
    return {key: given.get(key, {}) for key in keys}


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
    parameters need (a mixture: criteria.Mixture of each criterion's), wrapped once in
    self-distillation when `distillation` (with PSD) is given;
    `n_epochs` sets the pace of its progressive weight; `n_images`, the training split's size,
    bounds a cross-batch memory."""
    memory = _memory(settings, embed_dim, distillation, n_images)
    if settings.is_mixture or settings.loss_weights:
        base = Mixture(settings.names, [_criterion(member, n_classes, embed_dim) for member in settings.members()],
                       settings.weights)
    else:
        base = _criterion(settings, n_classes, embed_dim)
    return SelfDistilledCriterion(base, distillation, n_epochs, memory)


def _criterion(settings, n_classes, embed_dim):
    """The criterion of the settings of one loss."""
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
    return cls(**kwargs)


def _memory(settings, embed_dim, distillation, n_images):
    if not settings.xbm_size:
        return None
    if n_images is not None and settings.xbm_size > n_images:
        raise SettingError(f"xbm_size {settings.xbm_size} is larger than the training split ({n_images} images): "
                           f"the memory would hold copies of one image; use at most {n_images}", ["xbm_size"])
    diffused = distillation is not None and distillation.PSD and distillation.OBDP
    graph = distillation.diffusion if diffused else None
    missing = []
    if diffused and graph.k is None:
        missing.append("diffusion_k 10")
    if diffused and not diffusion.SOLVERS.get(graph.solver).iterative:
        missing.append("diffusion_solver iterative")
    if missing:
        raise SettingError("OBDP over a cross-batch memory needs a kNN graph and an iterative solver (a dense graph "
                           f"of M entries costs M^2): add {' and '.join(missing)}", ["diffusion_k", "diffusion_solver"])
    return CrossBatchMemory(settings.xbm_size, embed_dim, settings.xbm_start, teacher=diffused,
                            k=distillation.diffusion.k if diffused else None)

