"""The parts of training that are not its loop (main.py): one optimisation step with its
precision, compilation and data-parallel options, the optimiser, seeding and determinism, and
the progress lines of a run without a terminal."""
import datetime
import functools
import math
import os
import random
import time
from collections import Counter

import numpy as np
import torch
from tqdm import tqdm

import distributed
from errors import UserError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLoss(Exception):
    """The loss of a step was NaN or infinite; args[0] is its value, `where` the epoch and iteration."""
    where = ""


class TrainingStep:
    """One optimisation step on a batch: the student (and the teacher, when its term has weight) embed
    the batch under the chosen precision; the loss sees the global batch in float32.

    amp "bf16" / "fp16" runs the networks under autocast (fp16 with a gradient scaler); the loss, the
    diffusion solve and the metrics stay in float32. `compile` wraps the networks' forward in
    torch.compile. Under torchrun the embeddings are gathered across ranks and the gradients averaged.
    `clip_grad` > 0 clips the gradient norm of all trained parameters (after averaging, before the
    step); a per-step `schedule` (cosine) advances after each step.
    """

    def __init__(self, model, teacher, criterion, optimizer, amp=None, channels_last=False, compile=False,
                 skip_nonfinite=False, clip_grad=0.0, schedule=None):
        self.model, self.teacher, self.criterion, self.optimizer = model, teacher, criterion, optimizer
        self.clip_grad = clip_grad
        self.schedule = schedule
        self.student_forward = torch.compile(model) if compile else model
        self.teacher_forward = torch.compile(teacher) if compile and teacher is not None else teacher
        self.amp_dtype = AMP_DTYPES.get(amp)
        self.channels_last = channels_last
        self.skip_nonfinite = skip_nonfinite
        device_type = next(model.parameters()).device.type
        self.scaler = torch.amp.GradScaler(device_type, enabled=amp == "fp16")
        self.parameters = [*model.parameters(), *criterion.parameters()]

    def embed(self, forward, images):
        with torch.autocast(images.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            return distributed.gather(forward(images).float())

    def __call__(self, images, labels, epoch):
        """The loss of the step, or None when it was not finite and skip_nonfinite skipped the batch."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        teacher_batch = None
        if self.teacher is not None and self.criterion.needs_teacher(epoch):
            with torch.no_grad():
                teacher_batch = self.embed(self.teacher_forward, images)
        loss = self.criterion(batch=self.embed(self.student_forward, images), labels=distributed.gather(labels),
                              teacher_batch=teacher_batch, epoch=epoch)
        if not torch.isfinite(loss):
            if self.skip_nonfinite:
                return None
            raise NonFiniteLoss(loss.item())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        distributed.average_gradients(self.parameters)
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.schedule is not None:
            self.schedule.after_step()
        return loss


def build_optimizer(model, criterion, name="adam", lr=1e-5, head_lr=None, decay=4e-4, layer_decay=1.0):
    """The optimiser over the backbone at `lr`, the embedding head at `head_lr` (default: lr) and the
    criterion's learnt parameters at their own lr without weight decay.

    adam and sgd (momentum 0.9) decay every weight, as the released code does. adamw (decoupled
    weight decay, the ViT recipe) leaves biases and norms (the 1-D parameters) and the backbone's
    position embeddings and class tokens undecayed, as timm does. `layer_decay` d < 1 scales the
    learning rate of a backbone parameter at depth l (0: the stem, then one per block, L the deepest)
    by d ** (L + 1 - l), the embedding head sitting at L + 1: timm's param_groups_layer_decay rule."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimiser {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    scale = {}
    if layer_decay != 1:
        depths = model.backbone_layers()
        if depths is None:
            raise UserError(f"--layer_decay needs a backbone made of blocks (the ResNets, se_resnext50, timm models); "
                            f"--arch {model.arch} has no layer groups: drop --layer_decay")
        top = max(depths.values()) + 1
        scale = {parameter: layer_decay ** (top - depths[parameter]) for parameter in depths}
    undecayed = model.no_weight_decay()

    def groups(named_parameters, group_lr):
        """One group a (learning-rate scale, decayed or not), in the parameters' order."""
        buckets = {}
        for parameter_name, parameter in named_parameters:
            decayed = name != "adamw" or not (parameter.ndim <= 1 or parameter_name in undecayed)
            buckets.setdefault((scale.get(parameter_name, 1.0), decayed), []).append(parameter)
        return [{"params": params, "lr": group_lr * factor, **({} if decayed else {"weight_decay": 0.0})}
                for (factor, decayed), params in buckets.items()]

    head = [(f"head.{index}", parameter) for index, parameter in enumerate(model.head_parameters())]
    all_groups = (groups(model.named_backbone_parameters(), lr) + groups(head, lr if head_lr is None else head_lr)
                  + criterion.optim_groups())
    if name == "sgd":
        return torch.optim.SGD(all_groups, lr=lr, weight_decay=decay, momentum=0.9)
    return OPTIMIZERS[name](all_groups, lr=lr, weight_decay=decay)


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def warmup_cosine(step, warmup_steps, total_steps):
    """The learning-rate factor of optimiser step `step` (from 0): a linear rise to 1 over
    `warmup_steps`, then half a cosine from 1 to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class LearningRateSchedule:
    """--scheduler: "step" multiplies the learning rates by `gamma` at the epochs `milestones`, after
    each epoch (the released MultiStepLR); "cosine" warms up over `warmup_steps` optimiser steps and
    then follows half a cosine to 0 at `total_steps`, after each step; "none" keeps them."""

    def __init__(self, optimizer, name="step", milestones=(), gamma=0.3, total_steps=1, warmup_steps=0):
        self.name = name
        self.optimizer = optimizer
        if name == "step":
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
        elif name == "cosine":
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, functools.partial(warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps))
        elif name == "none":
            self.scheduler = None
        else:
            raise ValueError(f"unknown scheduler {name!r}; choose step, cosine or none")

    def after_step(self):
        if self.name == "cosine":
            self.scheduler.step()

    def after_epoch(self):
        if self.name == "step":
            self.scheduler.step()

    def factor(self) -> float:
        """The current learning rates over the initial ones."""
        if self.scheduler is None:
            return 1.0
        group = self.optimizer.param_groups[0]
        return group["lr"] / group["initial_lr"] if group["initial_lr"] else 1.0

    def state_dict(self) -> dict | None:
        if self.scheduler is None:
            return None
        # weights_only loading takes plain dicts: not the milestones' Counter, nor the lambdas
        state = {key: value for key, value in self.scheduler.state_dict().items() if key != "lr_lambdas"}
        if self.name == "step":
            state["milestones"] = dict(self.scheduler.milestones)
        return state

    def load_state_dict(self, state):
        if self.scheduler is None or state is None:
            return
        if self.name == "step":
            state = {**state, "milestones": Counter(state["milestones"])}
        else:
            state = {**state, "lr_lambdas": [None] * len(self.optimizer.param_groups)}
        self.scheduler.load_state_dict(state)


def configure_determinism(deterministic):
    if not deterministic:
        return
    # cuBLAS needs this before its first call to be deterministic.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class ProgressLines:
    """Progress without a terminal: one line every `every` seconds (every step at 0), with the
    step, the epoch's mean loss so far, the speed and the time left in the epoch."""

    def __init__(self, label, steps, every):
        self.label, self.steps, self.every = label, steps, every
        self.started = self.printed = time.time()
        self.images = 0

    def step(self, iteration, images, mean_loss):
        self.images += images
        now = time.time()
        if now - self.printed < self.every and iteration < self.steps:
            return
        self.printed = now
        elapsed = max(now - self.started, 1e-9)
        left = datetime.timedelta(seconds=round(elapsed / iteration * (self.steps - iteration)))
        print(f"{self.label} step {iteration}/{self.steps}: loss {mean_loss():.4f}, {self.images / elapsed:.1f} "
              f"images/s, {left} left in the epoch", flush=True)


def train_one_epoch(step, loader, device, epoch, n_epochs, show_progress=True, progress_every=60.0):
    """Mean loss terms of one epoch of `step` (a TrainingStep).

    A non-finite loss raises NonFiniteLoss, its `where` naming the epoch and iteration, unless the
    step skips such batches: then they are counted. Progress shows as a bar on a terminal; without one (a file, a
    cluster log) as a line every `progress_every` seconds.
    """
    step.model.train()
    totals, steps, skipped = {"loss": 0.0, "dml": 0.0, "kd": 0.0}, 0, 0
    progress = tqdm(loader, desc=f"epoch {epoch + 1}/{n_epochs}", leave=False, disable=None if show_progress else True)
    lines = ProgressLines(f"epoch {epoch + 1}/{n_epochs}", len(loader), progress_every) \
        if show_progress and progress.disable else None
    for iteration, (images, labels) in enumerate(progress, start=1):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        try:
            loss = step(images, labels, epoch)
        except NonFiniteLoss as error:
            error.where = f"epoch {epoch + 1}, iteration {iteration}"
            raise
        if loss is None:
            skipped += 1
            continue
        for term, value in {"loss": loss.detach(), **step.criterion.last_terms}.items():
            totals[term] = totals[term] + value
        steps += 1
        if lines is not None:
            lines.step(iteration, len(images), lambda: float(totals["loss"]) / steps)
    means = {term: float(total) / max(steps, 1) for term, total in totals.items()}
    means["kd_weight"] = step.criterion.distillation_weight(epoch)
    means["skipped_batches"] = skipped
    return means
