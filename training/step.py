"""One optimisation step with its precision, compilation and data-parallel options, the batch loop
of an epoch with the progress lines of a run without a terminal, seeding and determinism."""
import datetime
import os
import random
import time

import numpy as np
import torch
from tqdm import tqdm

import distributed

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
