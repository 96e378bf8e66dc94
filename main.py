"""Train a deep metric learning model, optionally with PSD / OBD-SD (SPEC section 1).

    python main.py --dataset cub200 --source /data/cub200 --PSD --OBDP

Each run gets a folder under --save_path with config.json, metrics.csv (one row per
evaluation), training.csv (one row per epoch), checkpoint_last.pth, one
checkpoint_best_<metric>.pth per --storage_metrics and summary.json.
"""
import copy
import csv
import datetime
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import architectures
import criteria
import datasampler
import datasets
import evaluation
import parameters
from errors import UserError, one_line


def main(argv=None):
    opt = parameters.parse(argv)
    try:
        train(opt)
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)


def train(opt):
    seed_everything(opt.seed)
    device = select_device(opt.gpu)
    splits = datasets.select(opt.dataset, opt.source, augmentation=opt.augmentation,
                             use_tv_split=opt.use_tv_split, tv_split_perc=opt.tv_split_perc,
                             tv_split_by_samples=opt.tv_split_by_samples)
    model = architectures.select(opt.arch, opt.embed_dim, pretrained=not opt.not_pretrained,
                                 pretrained_weights=opt.pretrained_weights).to(device)
    criterion = criteria.select(opt, n_classes=splits["train"].n_classes).to(device)
    optimizer = build_optimizer(opt, model, criterion)
    scheduler = (torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=opt.tau, gamma=opt.gamma)
                 if opt.scheduler == "step" else None)
    sampler = datasampler.select(opt.data_sampler, splits["train"].labels, opt.bs,
                                 opt.samples_per_class, opt.seed)
    loader_options = {"num_workers": opt.kernels, "pin_memory": device.type == "cuda",
                      "persistent_workers": opt.kernels > 0}
    train_loader = torch.utils.data.DataLoader(splits["train"], batch_sampler=sampler, **loader_options)
    eval_loaders = {split: torch.utils.data.DataLoader(dataset, batch_size=opt.bs, shuffle=False, **loader_options)
                    for split, dataset in splits.items() if split != "train"}
    # The teacher is the student as it was at the end of the previous epoch, kept in memory.
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if criterion.distillation else None

    run = Run(opt, selection_split="val" if "val" in eval_loaders else "test")
    run.online_log_start()
    print(f"run folder: {run.folder}\ntrain: {len(splits['train'])} images, {splits['train'].n_classes} classes | "
          + " | ".join(f"{split}: {len(loader.dataset)} images" for split, loader in eval_loaders.items()))
    run.evaluate(0, model, eval_loaders, device)
    for epoch in range(opt.n_epochs):
        sampler.set_epoch(epoch)
        losses = train_one_epoch(model, teacher, criterion, optimizer, train_loader, device, epoch, opt.n_epochs)
        if scheduler is not None:
            scheduler.step()
        if teacher is not None:
            teacher.load_state_dict(model.state_dict())
        run.log_training(epoch + 1, losses, optimizer)
        run.evaluate(epoch + 1, model, eval_loaders, device)
        run.save_checkpoint("checkpoint_last.pth", model, epoch + 1)
    run.finish()
    return run


def train_one_epoch(model, teacher, criterion, optimizer, loader, device, epoch, n_epochs):
    """Mean loss terms of one epoch; the teacher only runs when its term has weight."""
    model.train()
    use_teacher = teacher is not None and criterion.needs_teacher(epoch)
    totals, steps = {"loss": 0.0, "dml": 0.0, "kd": 0.0}, 0
    progress = tqdm(loader, desc=f"epoch {epoch + 1}/{n_epochs}", leave=False, disable=None)
    for images, labels in progress:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        teacher_batch = None
        if use_teacher:
            with torch.no_grad():
                teacher_batch = teacher(images)
        loss = criterion(batch=model(images), labels=labels, teacher_batch=teacher_batch, epoch=epoch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for term, value in {"loss": loss.detach(), **criterion.last_terms}.items():
            totals[term] = totals[term] + value
        steps += 1
    means = {term: float(total) / max(steps, 1) for term, total in totals.items()}
    means["kd_weight"] = criterion.distillation_weight(epoch)
    if not math.isfinite(means["loss"]):
        raise UserError(f"the loss became {means['loss']} in epoch {epoch + 1}; lower --lr or --kd_lambda")
    return means


def build_optimizer(opt, model, criterion):
    fc_lr = opt.fc_lr if opt.fc_lr >= 0 else opt.lr
    groups = [{"params": model.backbone_parameters(), "lr": opt.lr},
              {"params": model.head_parameters(), "lr": fc_lr}] + criterion.optim_groups()
    if opt.optim == "adam":
        return torch.optim.Adam(groups, lr=opt.lr, weight_decay=opt.decay)
    return torch.optim.SGD(groups, lr=opt.lr, weight_decay=opt.decay, momentum=0.9)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(gpus):
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if gpus[0] >= torch.cuda.device_count():
        raise UserError(f"--gpu {gpus[0]} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(f"cuda:{gpus[0]}")


class Run:
    """The run folder: config, metric tables, checkpoints, summary, and the optional W&B run."""

    def __init__(self, opt, selection_split):
        self.opt = opt
        self.selection_split = selection_split
        self.folder = new_run_folder(opt.save_path, opt.savename or
                                     f"{opt.dataset}_{datetime.datetime.now():%Y-%m-%d_%H-%M-%S}")
        self.config = vars(opt).copy()
        write_json(os.path.join(self.folder, "config.json"), self.config)
        self.metric_names = list(opt.evaluation_metrics)
        self.best = {}
        self.history = []
        self.wandb = None
        self.started = time.time()
        self.table_printed = False

    def online_log_start(self):
        if not self.opt.log_online:
            return
        if os.environ.get("WANDB_MODE") not in ("offline", "disabled") and not os.environ.get("WANDB_API_KEY"):
            raise UserError("--log_online needs WANDB_API_KEY in the environment (or WANDB_MODE=offline)")
        import wandb
        self.wandb = wandb.init(project=self.opt.project, group=self.opt.group or None,
                                name=os.path.basename(self.folder), config=self.config, dir=self.folder)

    def evaluate(self, epoch, model, loaders, device):
        for split, loader in loaders.items():
            features, labels = evaluation.embed(model, loader, device, description=f"embedding {split}")
            metrics = evaluation.compute(features, labels, self.metric_names, seed=self.opt.seed)
            improved = self._update_best(epoch, split, metrics, model)
            row = {"epoch": epoch, "split": split, **metrics, "best_for": " ".join(improved)}
            self.history.append(row)
            append_csv(os.path.join(self.folder, "metrics.csv"), row)
            self._print_row(row)
            if self.wandb is not None:
                self.wandb.log({f"{split}/{name}": value for name, value in metrics.items()} | {"epoch": epoch})

    def _update_best(self, epoch, split, metrics, model):
        if split != self.selection_split:
            return []
        improved = [name for name in self.opt.storage_metrics
                    if name not in self.best or metrics[name] > self.best[name]["value"]]
        for name in improved:
            checkpoint = f"checkpoint_best_{name}.pth"
            self.best[name] = {"value": metrics[name], "epoch": epoch, "checkpoint": checkpoint}
            self.save_checkpoint(checkpoint, model, epoch)
        return improved

    def _print_row(self, row):
        columns = ["epoch", "split", *self.metric_names]
        if not self.table_printed:
            tqdm.write("  ".join(f"{c:>10}" for c in columns))
            self.table_printed = True
        cells = [f"{row['epoch']:>10}", f"{row['split']:>10}"]
        cells += [f"{row[name]:>10.4f}" for name in self.metric_names]
        tqdm.write("  ".join(cells) + ("  *" if row["best_for"] else ""))

    def log_training(self, epoch, losses, optimizer):
        row = {"epoch": epoch, **losses,
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - self.started, 1)}
        append_csv(os.path.join(self.folder, "training.csv"), row)
        if self.wandb is not None:
            self.wandb.log({f"train/{term}": value for term, value in losses.items()} | {"epoch": epoch})

    def save_checkpoint(self, filename, model, epoch):
        checkpoint = {"network": model.state_dict(), "arch": self.opt.arch, "embed_dim": self.opt.embed_dim,
                      "epoch": epoch, "config": self.config}
        save_atomically(checkpoint, os.path.join(self.folder, filename))

    def finish(self):
        final = {row["split"]: {name: row[name] for name in self.metric_names}
                 for row in self.history if row["epoch"] == self.history[-1]["epoch"]}
        best = {}
        for name, record in self.best.items():
            at_best = {row["split"]: {m: row[m] for m in self.metric_names}
                       for row in self.history if row["epoch"] == record["epoch"]}
            best[name] = {**record, "metrics": at_best}
        summary = {"run_folder": self.folder, "selection_split": self.selection_split,
                   "epochs": self.opt.n_epochs, "best": best, "final": final,
                   "train_seconds": round(time.time() - self.started, 1)}
        write_json(os.path.join(self.folder, "summary.json"), summary)
        if self.wandb is not None:
            self.wandb.summary.update({f"best/{name}": record["value"] for name, record in best.items()})
            self.wandb.finish()
        print(f"best checkpoints chosen on the {self.selection_split} split: "
              + ", ".join(f"{name} {record['value']:.4f} at epoch {record['epoch']}" for name, record in best.items()))
        print(f"run saved in {self.folder}")


def new_run_folder(save_path, name):
    """A fresh folder: an existing run is never overwritten, a suffix is added instead."""
    try:
        os.makedirs(save_path, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create --save_path {save_path}: {error.strerror}") from None
    folder, suffix = os.path.join(save_path, name), 1
    while True:
        try:
            os.makedirs(folder)
            return folder
        except FileExistsError:
            folder, suffix = os.path.join(save_path, f"{name}_{suffix}"), suffix + 1


def save_atomically(obj, path):
    """torch.save into a temporary file, flushed and renamed: a crash leaves the old file intact."""
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_json(path, content):
    with open(path, "w") as handle:
        json.dump(content, handle, indent=2)


def append_csv(path, row):
    new_file = not os.path.exists(path)
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new_file:
            writer.writeheader()
        writer.writerow(row)


if __name__ == "__main__":
    main()
