"""The optimiser and the learning-rate schedule of a run, both registered by name (OPTIMIZERS,
SCHEDULES) and chosen by OptimisationSettings."""
import functools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch

from errors import SettingError
from registry import Registry

OPTIMIZERS = Registry("optimiser", order=None)
SCHEDULES = Registry("learning-rate schedule", order=None)


@dataclass(frozen=True)
class OptimisationSettings:
    """How the parameters are updated: the optimiser `optim` at learning rate `lr` (the embedding
    head at `fc_lr`, negative: lr) with weight decay `decay`, the learning-rate schedule `scheduler`
    (step: x gamma at the epochs `tau`; cosine: linear warm-up over `warmup_epochs`, then half a
    cosine to 0), layer-wise decay of the backbone's rates (1: off) and gradient-norm clipping (0: off).
    The defaults are the paper's: Adam, lr 1e-5, decay 4e-4, no learning-rate step."""
    optim: str = "adam"
    lr: float = 1e-5
    fc_lr: float = -1.0
    decay: float = 4e-4
    scheduler: str = "step"
    tau: tuple[int, ...] = ()
    gamma: float = 0.3
    warmup_epochs: float = 0.0
    layer_decay: float = 1.0
    clip_grad: float = 0.0

    def __post_init__(self):
        OPTIMIZERS.get(self.optim)
        SCHEDULES.get(self.scheduler)
        object.__setattr__(self, "tau", tuple(self.tau))
        problems = [(f"{name} must be 0 or more, got {value}", name)
                    for name, value in (("lr", self.lr), ("decay", self.decay), ("warmup_epochs", self.warmup_epochs))
                    if value < 0]
        if not 0 < self.layer_decay <= 1:
            problems.append((f"layer_decay must lie in (0, 1] (1: off), got {self.layer_decay}", "layer_decay"))
        if self.clip_grad < 0:
            problems.append((f"clip_grad must be 0 (off) or positive, got {self.clip_grad}", "clip_grad"))
        if problems:
            raise SettingError(problems[0][0], [problems[0][1]])

    @property
    def head_lr(self):
        """The embedding head's learning rate."""
        return self.fc_lr if self.fc_lr >= 0 else self.lr


@dataclass(frozen=True)
class Optimiser:
    build: Callable  # build(parameter groups, lr, weight_decay) -> torch.optim.Optimizer
    # Decoupled weight decay in the ViT recipe's way: none on biases, norms (the 1-D parameters), position
    # embeddings and class tokens.
    decays_weights_only: bool = False


OPTIMIZERS.register("adam", Optimiser(lambda groups, lr, decay: torch.optim.Adam(groups, lr=lr, weight_decay=decay)))
OPTIMIZERS.register("adamw", Optimiser(lambda groups, lr, decay: torch.optim.AdamW(groups, lr=lr, weight_decay=decay),
                                       decays_weights_only=True))
OPTIMIZERS.register("sgd", Optimiser(lambda groups, lr, decay: torch.optim.SGD(groups, lr=lr, weight_decay=decay,
                                                                                 momentum=0.9)))


def build_optimizer(model, criterion, settings: OptimisationSettings | None = None):
    """The optimiser over the backbone at settings.lr, the embedding head at its head_lr and the
    criterion's learnt parameters at their own lr without weight decay.

    adam and sgd (momentum 0.9) decay every weight, as the released code does. adamw (decoupled
    weight decay, the ViT recipe) leaves biases and norms (the 1-D parameters) and the backbone's
    position embeddings and class tokens undecayed, as timm does. `layer_decay` d < 1 scales the
    learning rate of a backbone parameter at depth l (0: the stem, then one per block, L the deepest)
    by d ** (L + 1 - l), the embedding head sitting at L + 1: timm's param_groups_layer_decay rule.
    Default settings: the paper's."""
    settings = settings or OptimisationSettings()
    optimiser = OPTIMIZERS.get(settings.optim)
    scale = {}
    if settings.layer_decay != 1:
        depths = model.backbone_layers()
        if depths is None:
            raise SettingError(f"layer_decay needs a backbone made of blocks (the ResNets, se_resnext50, timm "
                               f"models); arch {model.arch} has no layer groups: leave layer_decay at 1",
                               ["layer_decay", "arch"])
        top = max(depths.values()) + 1
        scale = {parameter: settings.layer_decay ** (top - depths[parameter]) for parameter in depths}
    undecayed = model.no_weight_decay()

    def groups(named_parameters, group_lr):
        """One group a (learning-rate scale, decayed or not), in the parameters' order."""
        buckets = {}
        for parameter_name, parameter in named_parameters:
            decayed = not optimiser.decays_weights_only or not (parameter.ndim <= 1 or parameter_name in undecayed)
            buckets.setdefault((scale.get(parameter_name, 1.0), decayed), []).append(parameter)
        return [{"params": params, "lr": group_lr * factor, **({} if decayed else {"weight_decay": 0.0})}
                for (factor, decayed), params in buckets.items()]

    head = [(f"head.{index}", parameter) for index, parameter in enumerate(model.head_parameters())]
    all_groups = (groups(model.named_backbone_parameters(), settings.lr) + groups(head, settings.head_lr)
                  + criterion.optim_groups())
    return optimiser.build(all_groups, settings.lr, settings.decay)


def warmup_cosine(step, warmup_steps, total_steps):
    """The learning-rate factor of optimiser step `step` (from 0): a linear rise to 1 over
    `warmup_steps`, then half a cosine from 1 to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Schedule:
    """A learning-rate schedule over the optimiser's groups, told of every optimiser step and
    every finished epoch; its state goes into checkpoint_last.pth (None: it has none)."""
    scheduler = None  # a torch.optim.lr_scheduler, if the schedule uses one

    def __init__(self, optimizer, settings: OptimisationSettings, steps_per_epoch: int, n_epochs: int):
        self.optimizer = optimizer

    def after_step(self):
        pass

    def after_epoch(self):
        pass

    def factor(self) -> float:
        """The current learning rates over the initial ones."""
        if self.scheduler is None:
            return 1.0
        group = self.optimizer.param_groups[0]
        return group["lr"] / group["initial_lr"] if group["initial_lr"] else 1.0

    def state_dict(self) -> dict | None:
        if self.scheduler is None:
            return None
        # weights_only loading takes plain dicts: not the lambdas
        return {key: value for key, value in self.scheduler.state_dict().items() if key != "lr_lambdas"}

    def load_state_dict(self, state):
        if self.scheduler is not None and state is not None:
            self.scheduler.load_state_dict(state)


@SCHEDULES.register("step")
class StepSchedule(Schedule):
    """x gamma at the epochs `tau`, after each epoch: the released MultiStepLR."""

    def __init__(self, optimizer, settings, steps_per_epoch, n_epochs):
        super().__init__(optimizer, settings, steps_per_epoch, n_epochs)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(settings.tau),
                                                              gamma=settings.gamma)

    def after_epoch(self):
        self.scheduler.step()

    def state_dict(self):
        return {**super().state_dict(), "milestones": dict(self.scheduler.milestones)}  # not a Counter

    def load_state_dict(self, state):
        if state is not None:
            super().load_state_dict({**state, "milestones": Counter(state["milestones"])})


@SCHEDULES.register("cosine")
class CosineSchedule(Schedule):
    """Linear warm-up over warmup_epochs, then half a cosine to 0 at the last step, after each step."""

    def __init__(self, optimizer, settings, steps_per_epoch, n_epochs):
        super().__init__(optimizer, settings, steps_per_epoch, n_epochs)
        factor = functools.partial(warmup_cosine, warmup_steps=round(settings.warmup_epochs * steps_per_epoch),
                                   total_steps=n_epochs * steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def after_step(self):
        self.scheduler.step()

    def load_state_dict(self, state):
        if state is not None:
            super().load_state_dict({**state, "lr_lambdas": [None] * len(self.optimizer.param_groups)})


@SCHEDULES.register("none")
class ConstantSchedule(Schedule):
    """The learning rates stay as they start."""


def schedule(optimizer, settings: OptimisationSettings, steps_per_epoch: int, n_epochs: int) -> Schedule:
    """The learning-rate schedule settings.scheduler over `optimizer` for a run of n_epochs epochs."""
    return SCHEDULES.get(settings.scheduler)(optimizer, settings, steps_per_epoch, n_epochs)
