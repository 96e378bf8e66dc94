"""The settings of a training run: one frozen value made of groups, each the dataclass of the library
it configures, and its record, the flat {key: value} of a run's config.json.

    RunSettings(data=DataSettings("digits"), model=ModelSettings("resnet18_normalize", 16), ...)
    record = to_record(settings); from_record(record) == settings

A record's keys are the command line's flags without the dashes: every plain field of a group is
its own key (`lr`, `bs`, `kd_lambda`); the diffusion settings of the distillation and of the
re-ranking are prefixed (diffusion_w, diffusion_tau, evaluation_diffusion_k, ...); a loss's and
its miner's hyperparameters are loss_<loss>_<name> and miner_<miner>_<name> (a mixture a+b: those of
each of its criteria and miners; loss_weights empty is 1 each). So config.json runs
again as `main.py --config config.json`, and records written by earlier versions (with the
hyperparameters of every loss, or without keys added since) read back: unknown keys are ignored,
missing ones take their defaults.
"""
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field

import criteria
import diffusion
from architectures import ModelSettings
from criteria import Distillation, LossSettings
from datasampler import BatchSettings
from datasets import LOADERS, DataSettings, facts
from errors import SettingError
from evaluation.evaluator import EvaluationSettings
from evaluation.protocols import unsuited
from training.folder import FolderSettings
from training.log import LogSettings
from training.optimisation import OptimisationSettings

AMP_MODES = ("bf16", "fp16")


@dataclass(frozen=True)
class TrainingSettings:
    """The loop: `n_epochs` from `seed`, on `gpu` (None: the first GPU, else the CPU) with `kernels`
    dataloader workers and `threads` CPU threads (None: distributed.cpu_threads chooses);
    deterministic algorithms, skipping batches whose loss is not finite, mixed
    precision (`amp`), channels-last memory, torch.compile, and the first `freeze_backbone_epochs`
    epochs training the head only."""
    seed: int = 0
    n_epochs: int = 150
    gpu: tuple[int, ...] | None = None
    kernels: int = min(8, os.cpu_count() or 1)
    threads: int | None = None
    deterministic: bool = False
    skip_nonfinite: bool = False
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    freeze_backbone_epochs: int = 0

    def __post_init__(self):
        if self.gpu is not None:
            object.__setattr__(self, "gpu", tuple(self.gpu))
        problems = []
        if self.n_epochs <= 0:
            problems.append((f"n_epochs must be positive, got {self.n_epochs}", ["n_epochs"]))
        if self.seed < 0:
            problems.append((f"seed must be 0 or more, got {self.seed}", ["seed"]))
        if self.kernels < 0:
            problems.append(("kernels must be 0 (load in the main process) or more", ["kernels"]))
        if self.threads is not None and self.threads < 1:
            problems.append((f"threads must be 1 or more, got {self.threads}", ["threads"]))
        if self.freeze_backbone_epochs < 0:
            problems.append((f"freeze_backbone_epochs must be 0 or more, got {self.freeze_backbone_epochs}",
                             ["freeze_backbone_epochs"]))
        if self.amp not in (None, *AMP_MODES):
            problems.append((f"amp must be one of {', '.join(AMP_MODES)}, not {self.amp!r}", ["amp"]))
        if problems:
            raise SettingError(*problems[0])


@dataclass(frozen=True)
class RunSettings:
    """Everything a training run computes from, and where it keeps it. The defaults are the
    paper's runs on CUB200; the evaluation metrics and protocol left at None are the dataset's."""
    data: DataSettings = field(default_factory=DataSettings)
    batches: BatchSettings = field(default_factory=BatchSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    distillation: Distillation = field(default_factory=Distillation)
    optimisation: OptimisationSettings = field(default_factory=OptimisationSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    folder: FolderSettings = field(default_factory=FolderSettings)
    logging: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self):
        dataset = facts(self.data.dataset)
        evaluation = self.evaluation
        protocol = evaluation.evaluation_protocol or dataset.default_protocol
        metrics = evaluation.evaluation_metrics or dataset.metrics
        if (protocol, metrics) != (evaluation.evaluation_protocol, evaluation.evaluation_metrics):
            values = {item.name: getattr(evaluation, item.name) for item in dataclasses.fields(evaluation)}
            object.__setattr__(self, "evaluation", _group(EvaluationSettings, _prefixes=_prefixes("evaluation"),
                                                          **{**values, "evaluation_metrics": metrics,
                                                             "evaluation_protocol": protocol}))
        problem = unsuited(protocol, self.data.dataset, dataset.splits,
                           {name: entry.splits for name, entry in LOADERS.items()})
        if problem:
            raise SettingError(problem, ["evaluation_protocol", "dataset"])
        if self.loss.xbm_size and self.loss.xbm_size < self.batches.bs:
            # pytorch-metric-learning's CrossBatchMemory refuses it too: the memory would keep a part of the batch
            raise SettingError(f"xbm_size {self.loss.xbm_size} cannot hold one batch of bs {self.batches.bs}: the "
                               f"memory holds the batch and the images before it; use at least {self.batches.bs}",
                               ["xbm_size", "bs"])
        optimisation, n_epochs = self.optimisation, self.training.n_epochs
        if optimisation.scheduler == "cosine" and not optimisation.warmup_epochs < n_epochs:
            raise SettingError(f"warmup_epochs must lie in [0, n_epochs {n_epochs}), got {optimisation.warmup_epochs}",
                               ["warmup_epochs", "n_epochs"])

    def replace(self, **groups) -> "RunSettings":
        """These settings with some fields of some groups changed: replace(data={"use_tv_split": True})."""
        return dataclasses.replace(self, **{name: dataclasses.replace(getattr(self, name), **changes)
                                            for name, changes in groups.items()})


# Record keys that do not change what a run computes: a resumed run may set them differently, and runs
# that differ only in them (and in seed) are repeats of one experiment for studies.summarize.
OPERATIONAL = {"resume", "resume_force", "overwrite", "kernels", "threads", "gpu", "log_online", "log_tensorboard",
               "project", "group", "save_path", "savename", "source", "pretrained_weights", "compile",
               "channels_last", "no_reports", "save_checkpoints", "progress_every"}
# The nested diffusion settings and the prefix of their keys.
DIFFUSION_PREFIXES = {("distillation", "diffusion"): "diffusion_",
                      ("evaluation", "reranking"): "evaluation_diffusion_"}
LOSS = "loss"


def to_record(settings: RunSettings) -> dict:
    """The flat {key: value} of the settings (config.json), in plain JSON types."""
    record = {}
    for group in dataclasses.fields(settings):
        value = getattr(settings, group.name)
        for item in dataclasses.fields(value):
            content = getattr(value, item.name)
            prefix = DIFFUSION_PREFIXES.get((group.name, item.name))
            if prefix is not None:
                record |= _diffusion_record(content, prefix)
            elif group.name == LOSS and item.name in ("hyperparameters", "miner_hyperparameters"):
                record |= _hyperparameter_record(value, item.name)
            else:
                record[item.name] = list(content) if isinstance(content, tuple) else content
    return record


def from_record(record: dict) -> RunSettings:
    """The settings of a record (to_record's, a run's config.json, the command line's flags). A
    setting that cannot work is a SettingError whose names are the record's keys."""
    groups = {}
    hints = typing.get_type_hints(RunSettings)
    for group in dataclasses.fields(RunSettings):
        cls = hints[group.name]
        cls_hints = typing.get_type_hints(cls)
        values = {}
        for item in dataclasses.fields(cls):
            prefix = DIFFUSION_PREFIXES.get((group.name, item.name))
            if prefix is not None:
                values[item.name] = _diffusion_from_record(record, prefix, item)
            elif group.name == LOSS and item.name in ("hyperparameters", "miner_hyperparameters"):
                continue
            elif item.name in record:
                values[item.name] = _typed(cls_hints[item.name], record[item.name])
        if group.name == LOSS:
            values |= _hyperparameters_from_record(record, values)
        groups[group.name] = _group(cls, _prefixes=_prefixes(group.name), **values)
    return _group(RunSettings, **groups)


def differences(saved: dict, current: dict, ignore=OPERATIONAL) -> dict:
    """{key: (saved value, current value)} where two records differ, `ignore`d keys aside; both
    are read through from_record first, so a record of an earlier version compares as it runs."""
    saved, current = to_record(from_record(saved)), to_record(from_record(current))
    return {key: (saved.get(key), current.get(key)) for key in sorted(set(saved) | set(current))
            if key not in ignore and saved.get(key) != current.get(key)}


def _prefixes(group):
    """The key prefixes of the diffusion settings nested in `group`."""
    return [prefix for (owner, _), prefix in DIFFUSION_PREFIXES.items() if owner == group]


def _group(cls, _prefixes=(), **values):
    """cls(**values) with a SettingError's names turned into record keys: the names of a nested
    diffusion setting (not fields of cls) get its prefix."""
    try:
        return cls(**values)
    except SettingError as error:
        plain = {item.name for item in dataclasses.fields(cls)}
        names = {word: key if key in plain or not _prefixes else _prefixes[0] + key
                 for word, key in error.names.items()}
        raise SettingError(str(error), names) from None
    except ValueError as error:  # an unknown name of a registry
        raise SettingError(str(error)) from None


def _diffusion_record(settings: diffusion.Settings, prefix):
    plain = {item.name: getattr(settings, item.name) for item in dataclasses.fields(settings) if item.name != "options"}
    return {prefix + name: value for name, value in {**plain, **settings.options}.items()}


def _diffusion_from_record(record, prefix, item):
    default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
    hints = typing.get_type_hints(diffusion.Settings)
    values = {name: _typed(hints[name], record[prefix + name]) for name in hints
              if name != "options" and prefix + name in record}
    options = {name: record[prefix + name] for name in diffusion.parameters() if prefix + name in record}
    try:
        chosen = dataclasses.replace(default, **values)  # the graph and solver the record names, for their options
        taken = {name: value for name, value in options.items() if name in chosen.options}
        return dataclasses.replace(chosen, options={**chosen.options, **taken})
    except SettingError as error:
        raise SettingError(str(error), {word: prefix + key for word, key in error.names.items()}) from None
    except ValueError as error:  # an unknown graph or solver
        raise SettingError(str(error)) from None


def _hyperparameter_groups(settings: LossSettings, item):
    """[(record key prefix, {name: value})] of the loss's (item "hyperparameters") or its miners'
    hyperparameters: one group, or one per criterion (per miner) of a mixture."""
    values = getattr(settings, item)
    if item == "hyperparameters":
        if settings.is_mixture:
            return [(f"loss_{_loss_flag(name)}_", values[name]) for name in settings.names]
        return [(f"loss_{_loss_flag(criteria.base_name(settings.loss))}_", values)]
    if settings.is_mixture:
        return [(f"miner_{miner}_", hyperparameters) for miner, hyperparameters in values.items()]
    return [(f"miner_{settings.batch_mining}_", values)]


def _loss_flag(name):
    """The <name> of a criterion's loss_<name>_<param> keys: pml for every pml:<LossClass>."""
    return "pml" if name.startswith("pml:") else name


def _hyperparameter_record(settings: LossSettings, item):
    return {prefix + name: value for prefix, values in _hyperparameter_groups(settings, item)
            for name, value in values.items()}


def _hyperparameters_from_record(record, values):
    """The hyperparameters of the loss and miner(s) that `values` name, from the record's keys."""
    bare = _group(LossSettings, **values)  # resolves the default miner(s)
    found = {}
    for item in ("hyperparameters", "miner_hyperparameters"):
        groups = [{name: record[prefix + name] for name in defaults if prefix + name in record}
                  for prefix, defaults in _hyperparameter_groups(bare, item)]
        keys = bare.names if item == "hyperparameters" else list(bare.miner_hyperparameters)
        found[item] = dict(zip(keys, groups)) if bare.is_mixture else groups[0]
    return found


def _typed(hint, value):
    """A record's value as the field's type: JSON lists as tuples, an integer of a float field as a float."""
    if value is None:
        return None
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    target = next(option for option in typing.get_args(hint) if option is not type(None)) if union else hint
    if typing.get_origin(target) is tuple:
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
