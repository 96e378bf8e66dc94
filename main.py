"""Train a deep metric learning model, optionally with PSD / OBD-SD
(Zeng, Yang, Liu, Satoh, "Improving deep metric learning via self-distillation and online
batch diffusion process", Visual Intelligence 2024).

    python main.py --dataset cub200 --source /data/cub200 --PSD --OBDP

Each run gets a folder under --save_path with config.json, metrics.csv (one row per
evaluation), training.csv (one row per epoch), checkpoint_last.pth, one
checkpoint_best_<metric>.pth per --storage_metrics and summary.json.

    torchrun --nproc_per_node N main.py ...   trains data-parallel on the global batch (distributed.py)
"""
import contextlib
import copy
import csv
import datetime
import errno
import fcntl
import io
import json
import os
import random
import shlex
import shutil
import signal
import sys
import time
from collections import Counter

import numpy as np
import torch
from tqdm import tqdm

import architectures
import checkpoints
import criteria
import datasampler
import datasets
import distributed
import evaluation
import evaluation.networks
import parameters
from datasampler.seeded import SeededBatches, SeededSamples
from errors import Interrupted, UserError, run_command

# Flags that do not change what a run computes: a resumed run may set them differently.
OPERATIONAL_FLAGS = {"resume", "resume_force", "overwrite", "kernels", "gpu", "log_online", "project", "group",
                     "save_path", "savename", "source", "pretrained_weights", "compile", "channels_last", "no_reports",
                     "save_checkpoints", "progress_every"}
LAST_CHECKPOINT = "checkpoint_last.pth"
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def main(argv=None):
    opt = parameters.parse(argv)
    run_command(train, opt)


def train(opt):
    configure_determinism(opt.deterministic)
    seed_everything(opt.seed)
    context = distributed.setup(opt.gpu)
    try:
        return train_on(opt, context)
    finally:
        distributed.teardown()


def train_on(opt, context):
    """The training of `train` in one process: rank context.rank of context.world_size."""
    device = context.device
    distributed.check_batch_split(opt.bs, opt.samples_per_class, context.world_size,
                                  class_balanced=datasampler.draws_class_groups(opt.data_sampler))
    splits = datasets.select(opt.dataset, opt.source, augmentation=opt.augmentation,
                             use_tv_split=opt.use_tv_split, tv_split_perc=opt.tv_split_perc,
                             tv_split_by_samples=opt.tv_split_by_samples, on_bad_image=opt.on_bad_image,
                             workers=opt.kernels, holdout_classes=opt.holdout_classes,
                             **architectures.preprocessing(opt.arch))
    bad_files = sorted({path for dataset in splits.values() for path in dataset.bad_files})
    if bad_files and context.is_main:
        print(f"skipped {len(bad_files)} files that are not readable images (first: {bad_files[0]})")
    # --init_from replaces the ImageNet weights: they are not read then.
    model = architectures.select(opt.arch, opt.embed_dim, pretrained=not opt.not_pretrained and not opt.init_from,
                                 pretrained_weights=opt.pretrained_weights, head=opt.head).to(device)
    if opt.init_from is not None:
        evaluation.networks.load_into(model, opt.init_from, f"--init_from {opt.init_from}")
    criterion = criteria.select(opt, n_classes=splits["train"].n_classes).to(device)
    distributed.broadcast_parameters([model, criterion])
    if opt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(opt, model, criterion)
    scheduler = (torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=opt.tau, gamma=opt.gamma)
                 if opt.scheduler == "step" else None)
    sampler = SeededBatches(datasampler.select(opt.data_sampler, splits["train"].labels, opt.bs,
                                               opt.samples_per_class, opt.seed))
    if context.world_size > 1:
        sampler = distributed.RankShare(sampler, context.rank, context.world_size)
    # Loaders draw their worker seeds from their own generators, not from the training RNG.
    loader_options = {"num_workers": opt.kernels, "pin_memory": device.type == "cuda",
                      "persistent_workers": opt.kernels > 0}
    train_loader = torch.utils.data.DataLoader(SeededSamples(splits["train"]), batch_sampler=sampler,
                                               generator=torch.Generator(), **loader_options)
    eval_loaders = {split: torch.utils.data.DataLoader(dataset, batch_size=opt.bs, shuffle=False,
                                                       generator=torch.Generator(), **loader_options)
                    for split, dataset in splits.items() if split != "train"}
    # The teacher is the student as it was at the end of the previous epoch, kept in memory.
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if criterion.distillation else None

    with Run(opt, selection_split="val" if "val" in eval_loaders else "test", is_main=context.is_main) as run:
        train_in(run, opt, context, bad_files, splits, model, teacher, criterion, optimizer, scheduler, sampler,
                 train_loader, eval_loaders)
    return run


def train_in(run, opt, context, bad_files, splits, model, teacher, criterion, optimizer, scheduler, sampler,
             train_loader, eval_loaders):
    """The epochs of a run, in its locked folder."""
    device = context.device
    run.bad_files = len(bad_files)
    state = run.resume_state()
    if state is not None:
        restore_training(state, model, teacher, criterion, optimizer, scheduler, run)
    run.online_log_start()
    if context.is_main:
        print(f"run folder: {run.folder}\ntrain: {len(splits['train'])} images, {splits['train'].n_classes} classes"
              + "".join(f" | {split}: {len(loader.dataset)} images" for split, loader in eval_loaders.items())
              + (f" | {context.world_size} processes, {opt.bs // context.world_size} images each a step"
                 if context.world_size > 1 else ""))
    if state is None:
        run.evaluate(0, model, eval_loaders, device)
        run.save_training_state(0, model, criterion, optimizer, scheduler)
    step = TrainingStep(model, teacher, criterion, optimizer, amp=opt.amp, channels_last=opt.channels_last,
                        compile=opt.compile, skip_nonfinite=opt.skip_nonfinite)
    for epoch in range(run.epoch, opt.n_epochs):
        distributed.sync_random_state()  # rank 0 alone evaluated: its generators may have moved
        model.set_backbone_trainable(epoch >= opt.freeze_backbone_epochs)
        sampler.set_epoch(epoch)
        losses = train_one_epoch(step, train_loader, device, epoch, opt.n_epochs, run.last_checkpoint,
                                 show_progress=context.is_main, progress_every=opt.progress_every)
        run.skipped_batches += losses["skipped_batches"]
        if scheduler is not None:
            scheduler.step()
        if teacher is not None:
            teacher.load_state_dict(model.state_dict())
        run.log_training(epoch + 1, losses, optimizer)
        run.evaluate(epoch + 1, model, eval_loaders, device)
        run.save_training_state(epoch + 1, model, criterion, optimizer, scheduler)
        distributed.barrier()
    run.finish()


def restore_training(state, model, teacher, criterion, optimizer, scheduler, run):
    """Put a resumed run back where its checkpoint_last.pth left it."""
    architectures.load_weights(model, state, run.last_checkpoint)
    if teacher is not None:
        teacher.load_state_dict(model.state_dict())
    criterion.load_state_dict(state["criterion"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict({**state["scheduler"], "milestones": Counter(state["scheduler"]["milestones"])})
    checkpoints.restore_rng(state["rng"])
    run.epoch, run.best, run.skipped_batches = state["epoch"], state["best"], state["skipped_batches"]
    run.wandb_id = state.get("wandb_id")
    # The clock goes on from the checkpoint: a resumed run reports its whole training time.
    run.train_seconds = state.get("train_seconds", 0.0)
    run.started = time.time() - run.train_seconds
    print(f"resuming {run.folder} after epoch {run.epoch}")


class TrainingStep:
    """One optimisation step on a batch: the student (and the teacher, when its term has weight) embed
    the batch under the chosen precision; the loss sees the global batch in float32.

    amp "bf16" / "fp16" runs the networks under autocast (fp16 with a gradient scaler); the loss, the
    diffusion solve and the metrics stay in float32. `compile` wraps the networks' forward in
    torch.compile. Under torchrun the embeddings are gathered across ranks and the gradients averaged.
    """

    def __init__(self, model, teacher, criterion, optimizer, amp=None, channels_last=False, compile=False,
                 skip_nonfinite=False):
        self.model, self.teacher, self.criterion, self.optimizer = model, teacher, criterion, optimizer
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
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss


class NonFiniteLoss(Exception):
    pass


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


def train_one_epoch(step, loader, device, epoch, n_epochs, last_checkpoint=None, show_progress=True,
                    progress_every=60.0):
    """Mean loss terms of one epoch of `step` (a TrainingStep).

    A non-finite loss stops the run, naming the epoch and iteration, unless the step skips such
    batches: then they are counted. Progress shows as a bar on a terminal; without one (a file, a
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
            raise UserError(f"the loss became {error.args[0]} in epoch {epoch + 1}, iteration {iteration}; "
                            f"the last good checkpoint {last_checkpoint} is kept; lower --lr or "
                            "--kd_lambda, or pass --skip_nonfinite to skip such batches") from None
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


def build_optimizer(opt, model, criterion):
    fc_lr = opt.fc_lr if opt.fc_lr >= 0 else opt.lr
    groups = [{"params": model.backbone_parameters(), "lr": opt.lr},
              {"params": model.head_parameters(), "lr": fc_lr}] + criterion.optim_groups()
    if opt.optim == "adam":
        return torch.optim.Adam(groups, lr=opt.lr, weight_decay=opt.decay)
    return torch.optim.SGD(groups, lr=opt.lr, weight_decay=opt.decay, momentum=0.9)


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


class Run:
    """The run folder: config, metric tables, checkpoints, summary, and the optional W&B run.

    Under torchrun only rank 0 (is_main) evaluates and writes; the other ranks learn the folder
    from it and read the checkpoint they resume from.
    """

    def __init__(self, opt, selection_split, is_main=True):
        self.opt = opt
        self.selection_split = selection_split
        self.is_main = is_main
        self.config = vars(opt).copy()
        self.lock = None
        self.folder = distributed.broadcast_object(self._choose_folder() if is_main else None)
        self.epoch = 0
        self.skipped_batches = 0
        self.bad_files = 0
        self.wandb_id = None
        self.metric_names = list(opt.evaluation_metrics)
        self.best = {}
        self.history = []
        self.wandb = None
        self.started = time.time()
        self.train_seconds = 0.0  # up to the end of the last epoch (its checkpoint_last.pth)
        self.checked_splits = set()  # splits whose class sizes were checked against the metrics' k
        self.table_printed = False

    def _choose_folder(self):
        """The run's folder, locked for the life of the run: nothing is read or written there before."""
        opt = self.opt
        if opt.resume is None:
            folder = new_run_folder(opt.save_path, opt.savename or
                                    f"{opt.dataset}_{datetime.datetime.now():%Y-%m-%d_%H-%M-%S}", opt.overwrite)
            self.lock = RunLock(folder)
        else:
            folder = resume_folder(opt)
            make_folder(folder, "--save_path")
            self.lock = RunLock(folder)
            if os.path.exists(os.path.join(folder, LAST_CHECKPOINT)):
                check_resumable_config(folder, self.config, opt.resume_force)
        write_json(os.path.join(folder, "config.json"), self.config)
        return folder

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if self.lock is not None:
            self.lock.release()
        if self.is_main and isinstance(error, (KeyboardInterrupt, Interrupted)):
            number = getattr(error, "signal_number", signal.SIGINT)
            raise Interrupted(number, self.how_to_continue()) from None

    def how_to_continue(self):
        """One line: what an interrupted run's folder holds, and the command that continues it."""
        if not os.path.exists(self.last_checkpoint):
            return f"{self.folder} holds no {LAST_CHECKPOINT} to continue from; start the run again"
        folder = shlex.quote(self.folder)
        return (f"{self.folder} holds epoch {self.epoch} of {self.opt.n_epochs}; continue with: "
                f"python main.py --config {shlex.quote(os.path.join(self.folder, 'config.json'))} --resume {folder}")

    def online_log_start(self):
        if not self.opt.log_online or not self.is_main:
            return
        if os.environ.get("WANDB_MODE") not in ("offline", "disabled") and not os.environ.get("WANDB_API_KEY"):
            raise UserError("--log_online needs WANDB_API_KEY in the environment (or WANDB_MODE=offline)")
        import wandb
        self.wandb = wandb.init(project=self.opt.project, group=self.opt.group or None, id=self.wandb_id,
                                resume="allow", name=os.path.basename(self.folder), config=self.config,
                                dir=self.folder)
        self.wandb_id = self.wandb.id

    @property
    def last_checkpoint(self):
        return os.path.join(self.folder, LAST_CHECKPOINT)

    def resume_state(self):
        """checkpoint_last.pth of a resumed run (None when starting afresh), with the run's tables
        cut back to that checkpoint's epoch: rows written after it are written again."""
        resumable = self.opt.resume is not None and os.path.exists(self.last_checkpoint)
        state = checkpoints.load(self.last_checkpoint) if resumable else None
        if not self.is_main:
            return state
        for table in ("metrics.csv", "training.csv"):
            truncate_csv(os.path.join(self.folder, table), -1 if state is None else state["epoch"])
        self.history = [{**row, "epoch": int(row["epoch"]), **{name: float(row[name]) for name in self.metric_names}}
                        for row in read_csv(os.path.join(self.folder, "metrics.csv"))]
        return state

    def save_training_state(self, epoch, model, criterion, optimizer, scheduler):
        """checkpoint_last.pth with all a resumed run needs; also checkpoint_epoch_<N>.pth per --save_every."""
        self.epoch = epoch
        self.train_seconds = time.time() - self.started
        if not self.is_main:
            return
        state = {"criterion": criterion.state_dict(), "optimizer": optimizer.state_dict(),
                 "rng": checkpoints.rng_state(), "best": self.best, "skipped_batches": self.skipped_batches,
                 "wandb_id": self.wandb_id, "train_seconds": self.train_seconds}
        if scheduler is not None:
            # weights_only loading accepts plain dicts, not the scheduler's Counter of milestones.
            state["scheduler"] = {**scheduler.state_dict(), "milestones": dict(scheduler.milestones)}
        if self.opt.save_checkpoints in ("last_and_best", "last"):
            self.save_checkpoint(LAST_CHECKPOINT, model, epoch, state)
        if self.opt.save_every and epoch and epoch % self.opt.save_every == 0:
            self.save_checkpoint(f"checkpoint_epoch_{epoch}.pth", model, epoch, state)

    def evaluate(self, epoch, model, loaders, device):
        if not self.is_main:
            return
        self.evaluated = {}  # the latest embeddings of each split, for the reports at the end
        for split, loader in loaders.items():
            features, labels = evaluation.embed(model, loader, device, description=f"embedding {split}")
            if split not in self.checked_splits:
                self.checked_splits.add(split)
                depths = evaluation.vote_depths(self.metric_names)
                if self.opt.evaluation_diffusion:
                    depths[f"--evaluation_diffusion_k {self.opt.evaluation_diffusion_k}"] = \
                        self.opt.evaluation_diffusion_k
                for warning in evaluation.small_class_warnings(labels, depths, split):
                    tqdm.write(f"warning: {warning}", file=sys.stderr)
            metrics = evaluation.compute(features, labels, self.metric_names, seed=self.opt.seed)
            if self.opt.evaluation_diffusion:
                reranked = evaluation.compute(features, labels, evaluation.ranking_metrics(self.metric_names),
                                              neighbours=evaluation.diffusion_reranked(
                                                  self.opt.evaluation_diffusion_k, self.opt.evaluation_diffusion_w,
                                                  self.opt.evaluation_diffusion_shortlist))
                metrics |= {f"{name}+diffusion": value for name, value in reranked.items()}
            self.evaluated[split] = (features, labels, loader.dataset)
            improved = self._update_best(epoch, split, metrics, model)
            row = {"epoch": epoch, "split": split, **metrics, "best_for": " ".join(improved)}
            self.history.append(row)
            append_csv(os.path.join(self.folder, "metrics.csv"), row)
            self._print_row(row)
            if self.wandb is not None:
                self.wandb.log({f"{split}/{name}": value for name, value in metrics.items()} | {"epoch": epoch})

    def _update_best(self, epoch, split, metrics, model):
        # Epoch 0, the untrained network, is logged but never selected: the released protocol
        # evaluates trained epochs only.
        if split != self.selection_split or epoch == 0:
            return []
        improved = [name for name in self.opt.storage_metrics
                    if name not in self.best or metrics[name] > self.best[name]["value"]]
        keep = self.opt.save_checkpoints in ("last_and_best", "best")
        for name in improved:
            checkpoint = f"checkpoint_best_{name}.pth" if keep else None
            self.best[name] = {"value": metrics[name], "epoch": epoch, "checkpoint": checkpoint}
            if keep:
                self.save_checkpoint(checkpoint, model, epoch)
        return improved

    def _print_row(self, row):
        """One line of the console table: every metric of the row, the re-ranked ones included."""
        names = [name for name in row if name not in ("epoch", "split", "best_for")]
        widths = [max(10, len(name)) for name in names]
        if not self.table_printed:
            tqdm.write("  ".join([f"{'epoch':>10}", f"{'split':>10}"] + [f"{name:>{width}}"
                                                                        for name, width in zip(names, widths)]))
            self.table_printed = True
        cells = [f"{row['epoch']:>10}", f"{row['split']:>10}"]
        cells += [f"{row[name]:>{width}.4f}" for name, width in zip(names, widths)]
        tqdm.write("  ".join(cells) + ("  *" if row["best_for"] else ""))

    def log_training(self, epoch, losses, optimizer):
        if not self.is_main:
            return
        row = {"epoch": epoch, **losses,
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - self.started, 1)}
        append_csv(os.path.join(self.folder, "training.csv"), row)
        if self.wandb is not None:
            self.wandb.log({f"train/{term}": value for term, value in losses.items()} | {"epoch": epoch})

    def save_checkpoint(self, filename, model, epoch, training_state=None):
        checkpoint = {"network": model.state_dict(), **architectures.describe(model), "epoch": epoch,
                      "config": self.config, **(training_state or {})}
        checkpoints.save(checkpoint, os.path.join(self.folder, filename))

    def finish(self):
        if not self.is_main:
            return
        final = {row["split"]: {name: row[name] for name in self.metric_names}
                 for row in self.history if row["epoch"] == self.history[-1]["epoch"]}
        best = {}
        for name, record in self.best.items():
            at_best = {row["split"]: {m: row[m] for m in self.metric_names}
                       for row in self.history if row["epoch"] == record["epoch"]}
            best[name] = {**record, "metrics": at_best}
        if not self.opt.no_reports:
            from evaluation.reports import write_run_reports  # matplotlib only when a run ends

            reports = write_run_reports(self.folder, getattr(self, "evaluated", {}), self.opt.seed, self.wandb,
                                        epoch=self.history[-1]["epoch"] if self.history else None,
                                        selected={name: record["epoch"] for name, record in self.best.items()})
            print(f"reports: {', '.join(os.path.basename(path) for path in reports.values())}")
        summary = {"run_folder": self.folder, "selection_split": self.selection_split,
                   "selection": f"best epoch on the {self.selection_split} split among the trained epochs "
                                f"1-{self.opt.n_epochs}; epoch 0 (before training) is evaluated, never selected",
                   "epochs": self.opt.n_epochs, "best": best, "final": final,
                   "train_seconds": round(self.train_seconds, 1),
                   "skipped_batches": self.skipped_batches, "bad_files": self.bad_files,
                   "disk_bytes": folder_size(self.folder)}
        write_json(os.path.join(self.folder, "summary.json"), summary)
        if self.wandb is not None:
            self.wandb.summary.update({f"best/{name}": record["value"] for name, record in best.items()})
            self.wandb.finish()
        print(f"best checkpoints chosen on the {self.selection_split} split: "
              + ", ".join(f"{name} {record['value']:.4f} at epoch {record['epoch']}" for name, record in best.items()))
        print(f"run saved in {self.folder}")


def new_run_folder(save_path, name, overwrite=False):
    """A fresh folder. An existing run is never overwritten silently: the new run gets a suffixed
    name, unless overwrite asks to replace it."""
    make_folder(save_path, "--save_path")
    if not os.access(save_path, os.W_OK):
        raise UserError(f"--save_path {save_path} is not writable; choose a writable folder")
    folder, suffix = os.path.join(save_path, name), 1
    if overwrite and os.path.isdir(folder):
        RunLock(folder).release()  # never replace the folder of a run that is going on
        shutil.rmtree(folder)
    while True:
        try:
            os.makedirs(folder)
            break
        except FileExistsError:
            folder, suffix = os.path.join(save_path, f"{name}_{suffix}"), suffix + 1
    if suffix > 1:
        print(f"{os.path.join(save_path, name)} exists: this run goes to {folder} "
              "(--resume continues the existing run, --overwrite replaces it)")
    return folder


def make_folder(folder, flag):
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {folder} ({flag}): {error.strerror}; choose a writable folder") from None


def folder_size(folder):
    """Bytes of the files under `folder`."""
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def resume_folder(opt):
    """The run folder --resume continues: RUN_DIR; else --save_path/--savename, which may not hold a
    run yet (a job that always passes --resume starts its run the first time, and says so); else the
    newest run in --save_path."""
    if opt.resume:
        folder = opt.resume
        if not is_resumable(folder):
            raise UserError(f"--resume {folder}: no run to continue there (no {LAST_CHECKPOINT}); "
                            + runs_under(opt.save_path))
    elif opt.savename:
        folder = os.path.join(opt.save_path, opt.savename)
        if not is_resumable(folder):
            print(f"--resume: no run to continue at {folder} yet; starting it there")
    else:
        runs = [entry.path for entry in os.scandir(opt.save_path) if entry.is_dir() and is_resumable(entry.path)] \
            if os.path.isdir(opt.save_path) else []
        if not runs:
            raise UserError(f"--resume found no run in {opt.save_path}; name one with --resume RUN_DIR")
        folder = max(runs, key=os.path.getmtime)
    if os.path.isdir(folder) and os.listdir(folder) and not os.path.exists(os.path.join(folder, "config.json")):
        raise UserError(f"--resume {folder}: not a run folder (no config.json)")
    return folder


def is_resumable(folder):
    return os.path.exists(os.path.join(folder, "config.json")) and os.path.exists(os.path.join(folder, LAST_CHECKPOINT))


def runs_under(save_path):
    """Which runs --save_path holds, for an error message."""
    runs = sorted(entry.name for entry in os.scandir(save_path) if entry.is_dir() and is_resumable(entry.path)) \
        if os.path.isdir(save_path) else []
    if not runs:
        return f"--save_path {save_path} holds no run to continue"
    shown = ", ".join(runs[:8]) + (f" and {len(runs) - 8} more" if len(runs) > 8 else "")
    return f"runs under --save_path {save_path}: {shown}"


class RunLock:
    """An exclusive OS lock on <run folder>/run.lock, held for the life of a run, so two processes
    never write one run folder: the second stops at once, naming the first's pid. The OS drops the
    lock with its process, even after kill -9, so it never goes stale. It is a POSIX record lock
    (lockf), which belongs to the process: dataloader workers forked from it do not hold it on
    after it dies, as they would hold a flock."""

    def __init__(self, folder):
        self.folder = folder
        self.handle = open(os.path.join(folder, "run.lock"), "a+")
        try:
            fcntl.lockf(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise UserError(f"{folder} is in use by another process (pid {holder}); wait for it to end or stop "
                            "it, then --resume") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"{os.getpid()}\n")
        self.handle.flush()

    def release(self):
        if not self.handle.closed:
            fcntl.lockf(self.handle, fcntl.LOCK_UN)
            self.handle.close()


def check_resumable_config(folder, config, force):
    try:
        with open(os.path.join(folder, "config.json")) as handle:
            saved = parameters.canonical(json.load(handle))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {folder}/config.json ({error}); resume another run or start a new one") \
            from None
    differing = sorted(key for key in set(saved) | set(config)
                       if key not in OPERATIONAL_FLAGS and saved.get(key) != config.get(key))
    if differing and not force:
        changes = ", ".join(f"{key}: {saved.get(key)!r} -> {config.get(key)!r}" for key in differing)
        raise UserError(f"the flags differ from the run in {folder} ({changes}); "
                        "repeat its flags or pass --resume_force")


def write_json(path, content):
    checkpoints.write_atomically(path, json.dumps(content, indent=2).encode())


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def truncate_csv(path, last_epoch):
    """Keep the complete rows of epochs <= last_epoch (a killed run can leave a half-written line)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames
        kept = [row for row in reader if None not in row.values() and None not in row
                and row["epoch"].isdigit() and int(row["epoch"]) <= last_epoch]
    if not kept:
        os.remove(path)
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(kept)
    checkpoints.write_atomically(path, text.getvalue().encode())


def append_csv(path, row):
    """One row at the end of the table; a failed write (a full disk) leaves the table as it was."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(row))
    if not os.path.exists(path):
        writer.writeheader()
    writer.writerow(row)
    size = os.path.getsize(path) if os.path.exists(path) else 0
    try:
        with open(path, "a", newline="") as handle:
            handle.write(text.getvalue())
    except OSError as error:
        with contextlib.suppress(OSError):
            os.truncate(path, size)
        raise checkpoints.write_error(path, error) from None


if __name__ == "__main__":
    main()
