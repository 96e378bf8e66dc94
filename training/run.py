"""A training run: `run(settings, callbacks)` sets it up, trains it epoch after epoch and finishes it.

A run:
1. loads the dataset splits (datasets/), builds the network (architectures/), the loss with its
   self-distillation (criteria/), the optimiser and its schedule, the batches (datasampler/) and
   the evaluation (evaluation/): everything that can fail does so before its folder is touched;
2. takes its folder, new or resumed, locked for its life (training/folder.py);
3. evaluates the untrained network (epoch 0), then trains epoch after epoch: one TrainingStep a
   batch, the teacher refreshed after each epoch, the evaluation splits evaluated, the best
   checkpoints kept, checkpoint_last.pth written; after each epoch the callbacks hear it;
4. writes summary.json and the PNG reports.

Under torchrun every process runs it on its share of each global batch; rank 0 alone evaluates and writes.
"""
import glob
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import torch

import architectures
import checkpoints
import criteria
import datasampler
import datasets
import distributed
import evaluation.evaluator
import evaluation.networks
from datasampler.seeded import SeededBatches, SeededSamples
from errors import Interrupted, SettingError, UserError, counted
from evaluation.selection import BestEpochs
from training import optimisation, step
from training.folder import RunFolder, read_csv
from training.log import RunLog, online_logging_possible, tensorboard_available
from training.settings import RunSettings, differences, to_record


@dataclass
class EpochEnd:
    """What a callback hears after each trained epoch: its number, the evaluated metrics of each
    metrics.csv row ({row: {name: value}}; rank 0 only), the epoch's mean loss terms, and the run."""
    epoch: int
    metrics: dict
    losses: dict
    run: "Run"


@dataclass
class RunResult:
    folder: str
    metrics: list = field(default_factory=list)  # the rows of metrics.csv, as dicts of strings
    selected: dict = field(default_factory=dict)  # {storage metric: {"value", "epoch", "metrics"}}
    final: dict = field(default_factory=dict)  # {row: {metric: value}} after the last epoch trained
    stopped_after: int | None = None  # the epoch after which a callback stopped the run, if one did


class RunInterrupted(Interrupted):
    """Ctrl-C or SIGTERM stopped the run; `folder`, `epoch` (the last one kept), `n_epochs` and
    `resumable` (whether checkpoint_last.pth holds it) say what is left."""

    def __init__(self, signal_number, folder, epoch, n_epochs, resumable):
        held = f"{folder} holds epoch {epoch} of {n_epochs}" if resumable else \
            f"{folder} holds no checkpoint_last.pth to continue from; start the run again"
        super().__init__(signal_number, held)
        self.folder, self.epoch, self.n_epochs, self.resumable = folder, epoch, n_epochs, resumable


class TrainingFailed(UserError):
    """The loss became non-finite; `value` is it, `where` the epoch and iteration, and
    `last_checkpoint` the file that keeps the last good epoch."""

    def __init__(self, value, where, last_checkpoint):
        super().__init__(f"the loss became {value} in {where}; the last good checkpoint {last_checkpoint} is kept")
        self.value, self.where, self.last_checkpoint = value, where, last_checkpoint


def run(settings: RunSettings, callbacks=()) -> RunResult:
    """Train the run `settings` describe, from its start or, with settings.folder.resume, from where
    its folder's checkpoint_last.pth left off. After each trained epoch every callback is called
    with an EpochEnd; one that returns True stops the run there, leaving a complete folder that
    resuming continues. An exception a callback raises ends the run the same way and goes on up."""
    step.configure_determinism(settings.training.deterministic)
    step.seed_everything(settings.training.seed)
    context = distributed.setup(settings.training.gpu)
    try:
        with Run(settings, context) as state:
            while state.epoch < settings.training.n_epochs:
                end = state.train_epoch()
                if any([bool(callback(end)) for callback in callbacks]):
                    return state.finish(stopped=True)
            return state.finish()
    finally:
        distributed.teardown()


class Run:
    """The state of one run in this process (rank context.rank of context.world_size): its data,
    network, teacher, loss, optimiser, schedule, batches, evaluation, folder and progress.

        with Run(settings, context) as state:   # set up, folder taken, resumed or epoch 0 evaluated
            state.train_epoch()                  # -> EpochEnd
            state.finish()                       # -> RunResult
    """

    def __init__(self, settings: RunSettings, context=None):
        self.settings = settings
        self.context = context = context or distributed.Context(0, 1, distributed.select_device(None))
        self.threads = distributed.use_cpu_threads(settings.training.threads)
        device = context.device
        batches, training, logging = settings.batches, settings.training, settings.logging
        try:
            distributed.check_batch_split(batches.bs, batches.samples_per_class, context.world_size,
                                          class_balanced=datasampler.draws_class_groups(batches.data_sampler))
        except UserError as error:
            raise SettingError(str(error), {"batch_size": "bs", "samples_per_class": "samples_per_class"}) from None
        if logging.log_online and context.is_main and not online_logging_possible():
            raise SettingError("log_online needs WANDB_API_KEY in the environment (or WANDB_MODE=offline)",
                               ["log_online"])
        if logging.log_tensorboard and context.is_main and not tensorboard_available():
            raise SettingError("log_tensorboard needs the tensorboard package: pip install 'tensorboard>=2.14'",
                               ["log_tensorboard"])
        self.splits = splits = datasets.load(settings.data, workers=training.kernels,
                                             **settings.model.preprocessing())
        bad_files = sorted({path for dataset in splits.values() for path in dataset.bad_files})
        if bad_files and context.is_main:
            print(f"skipped {len(bad_files)} files that are not readable images (first: {bad_files[0]})")
        duplicates = datasets.duplicates.note(splits, settings.data.duplicates)
        if duplicates and context.is_main:
            print(duplicates)
        self.duplicates = datasets.duplicates.summary(splits, settings.data.duplicates)
        check_training_split(settings, splits["train"])
        self.model = model = architectures.build(settings.model).to(device)
        if settings.model.init_from is not None:
            try:
                evaluation.networks.load_into(model, settings.model.init_from, f"init_from {settings.model.init_from}")
            except SettingError:
                raise
            except UserError as error:
                raise SettingError(str(error), ["init_from"]) from None
        self.criterion = build_criterion(settings, splits["train"].n_classes, len(splits["train"])).to(device)
        distributed.broadcast_parameters([model, self.criterion])
        if training.channels_last:
            self.model = model = model.to(memory_format=torch.channels_last)
        self.optimizer = optimisation.build_optimizer(model, self.criterion, settings.optimisation)
        try:
            sampler = SeededBatches(datasampler.batches(batches, splits["train"].labels, training.seed))
        except SettingError:
            raise
        except UserError as error:  # the sampler names its arguments
            raise SettingError(str(error), {"batch_size": "bs", "samples_per_class": "samples_per_class",
                                            "sampler": "data_sampler"}) from None
        if context.world_size > 1:
            sampler = distributed.RankShare(sampler, context.rank, context.world_size)
        self.sampler = sampler
        steps, memory = len(sampler) * training.n_epochs, self.criterion.memory
        if memory is not None and memory.start >= steps and context.is_main:
            print(f"warning: --xbm_start {memory.start} is not below the run's {steps} steps ({training.n_epochs} "
                  f"epochs of {len(sampler)}): the memory is never used and the run trains the batch-only loss; "
                  f"lower --xbm_start", file=sys.stderr)
        self.schedule = optimisation.schedule(self.optimizer, settings.optimisation, len(sampler), training.n_epochs)
        # Loaders draw their worker seeds from their own generators, not from the training RNG.
        self.train_loader = torch.utils.data.DataLoader(
            SeededSamples(splits["train"]), batch_sampler=sampler,
            generator=torch.Generator(),
            num_workers=training.kernels, pin_memory=device.type == "cuda", persistent_workers=training.kernels > 0)
        self.teacher = criteria.Teacher(model) if self.criterion.distillation else None
        self.evaluate = evaluation.evaluator.setup(
            splits, settings.evaluation, batch_size=batches.bs, workers=training.kernels, seed=training.seed,
            pin_memory=device.type == "cuda",
            reranking_label=f"evaluation_diffusion_k {settings.evaluation.reranking.k}")
        self.best = BestEpochs(settings.evaluation.storage_metrics,
                               "val" if "val" in self.evaluate.loaders else "test",
                               keeps_checkpoints=settings.folder.keeps_best)
        self.record = {"epoch": 0, "skipped_batches": 0, "train_seconds": 0.0, "wandb_id": None,
                       "bad_files": len(bad_files)}
        # The machine's facts go with the settings into config.json and summary.json; from_record, and so
        # the resume check and --config, leave them out.
        self.config = {**to_record(settings), "environment": distributed.environment(self.threads)}
        self.log = RunLog(enabled=context.is_main)
        self.folder = None
        self.rows = []
        self.evaluated = {}

    @property
    def epoch(self):
        """The last epoch done (0: none trained)."""
        return self.record["epoch"]

    def __enter__(self):
        self.folder = self._open_folder()
        try:
            self._start()
        except BaseException as error:
            self.__exit__(type(error), error, None)
            raise
        return self

    def __exit__(self, kind, error, traceback):
        """The folder is released; an interruption says what the folder keeps (RunInterrupted)."""
        self.folder.__exit__(kind, error, traceback)
        if isinstance(error, (KeyboardInterrupt, Interrupted)) and not isinstance(error, RunInterrupted):
            raise RunInterrupted(getattr(error, "signal_number", signal.SIGINT), self.folder.folder, self.epoch,
                                 self.settings.training.n_epochs,
                                 os.path.exists(self.folder.last_checkpoint)) from None
        return False

    def _open_folder(self):
        """The run's folder, chosen and locked by rank 0, its config checked (resume) and written."""
        settings, context = self.settings.folder, self.context
        if not context.is_main:
            return RunFolder.reader(distributed.broadcast_object(None))
        if settings.resume is None:
            name = settings.savename or f"{self.settings.data.dataset}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
            folder = RunFolder.create(settings.save_path, name, settings.overwrite)
        else:
            folder = RunFolder.resume(settings.save_path, folder=settings.resume, name=settings.savename)
        try:
            saved = folder.saved_config()
            if saved is not None and not settings.resume_force:
                differing = differences(saved, self.config)
                if differing:
                    changes = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in differing.items())
                    raise SettingError(f"the settings differ from the run in {folder.folder} ({changes}); repeat "
                                       "its settings or set resume_force", ["resume_force"])
            folder.write_config(self.config)
        except BaseException:
            folder.__exit__(None, None, None)
            raise
        distributed.broadcast_object(folder.folder)
        return folder

    def _start(self):
        """Resume from checkpoint_last.pth, or evaluate the untrained network (epoch 0)."""
        state, self.rows = self.folder.last_state()
        if state is not None:
            architectures.load_weights(self.model, state, self.folder.last_checkpoint)
            self.criterion.load_state_dict(state["criterion"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state.get("scheduler"))
            checkpoints.restore_rng(state["rng"])
            self.record.update({key: state.get(key, value) for key, value in self.record.items() if key != "bad_files"})
            self.best.records = dict(state["best"])
            print(f"resuming {self.folder.folder} after epoch {self.epoch}")
        if self.teacher is not None:
            self.teacher.refresh(self.model)
        # The clock goes on from the checkpoint: a resumed run reports its whole training time.
        self.started = time.time() - self.record["train_seconds"]
        logging, run_folder = self.settings.logging, self.folder.folder
        if logging.log_online:
            self.record["wandb_id"] = self.log.start_online(logging.project, logging.group, self.record["wandb_id"],
                                                            os.path.basename(run_folder), self.config, run_folder)
        if logging.log_tensorboard:
            self.log.start_tensorboard(run_folder, purge_step=self.epoch + 1 if state is not None else None)
        if self.context.is_main:
            splits, world_size = self.splits, self.context.world_size
            print(f"run folder: {run_folder}\ntrain: {len(splits['train'])} images, "
                  f"{counted(splits['train'].n_classes, 'class', 'classes')}"
                  + "".join(f" | {split}: {len(dataset)} images" for split, dataset in splits.items()
                            if split != "train")
                  + (f" | {world_size} processes, {self.settings.batches.bs // world_size} images each a step"
                     if world_size > 1 else ""))
        if state is None:
            self.evaluated = self._finish_epoch(0)
        training = self.settings.training
        self.step = step.TrainingStep(self.model, self.teacher and self.teacher.network, self.criterion,
                                      self.optimizer, amp=training.amp, channels_last=training.channels_last,
                                      compile=training.compile, skip_nonfinite=training.skip_nonfinite,
                                      clip_grad=self.settings.optimisation.clip_grad, schedule=self.schedule)

    def train_epoch(self) -> EpochEnd:
        """Train the next epoch, evaluate it, keep its checkpoints; what the callbacks hear."""
        epoch, n_epochs = self.epoch, self.settings.training.n_epochs
        distributed.sync_random_state()  # rank 0 alone evaluated: its generators may have moved
        self.model.set_backbone_trainable(epoch >= self.settings.training.freeze_backbone_epochs)
        self.sampler.set_epoch(epoch)
        try:
            losses = step.train_one_epoch(self.step, self.train_loader, self.context.device, epoch, n_epochs,
                                          show_progress=self.context.is_main,
                                          progress_every=self.settings.logging.progress_every)
        except step.NonFiniteLoss as error:
            raise TrainingFailed(error.args[0], error.where, self.folder.last_checkpoint) from None
        self.record["skipped_batches"] += losses["skipped_batches"]
        self.schedule.after_epoch()
        if self.teacher is not None:
            self.teacher.refresh(self.model)
            self.criterion.teacher_refreshed()
        training_row = {"epoch": epoch + 1, **losses, "lr": self.settings.optimisation.lr * self.schedule.factor(),
                        "seconds": round(time.time() - self.started, 1)}
        self.folder.append("training.csv", training_row)
        self.log.online({**{f"train/{term}": value for term, value in losses.items()}, "train/lr": training_row["lr"]},
                        epoch + 1)
        self.evaluated = self._finish_epoch(epoch + 1)
        distributed.barrier()
        return EpochEnd(epoch + 1, {row: result.metrics for row, result in self.evaluated.items()}, losses, self)

    def _finish_epoch(self, epoch):
        """Evaluate, keep the best checkpoints, and write checkpoint_last.pth after `epoch`."""
        evaluated = self.evaluate(self.model, self.context.device) if self.context.is_main else {}
        for split, result in evaluated.items():
            improved = self.best.update(epoch, split, result.metrics)
            for name in improved if self.best.keeps_checkpoints else ():
                self.folder.save_checkpoint(self.best.records[name]["checkpoint"], self.model, epoch, self.config)
            row = {"epoch": epoch, "split": split, "protocol": result.protocol, **result.metrics,
                   "best_for": " ".join(improved)}
            self.rows.append(row)
            self.folder.append("metrics.csv", row)
            self.log.evaluation(row)
        reached = {"epoch": epoch, "train_seconds": time.time() - self.started}
        state = {"criterion": self.criterion.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "rng": checkpoints.rng_state(), "best": self.best.records,
                 **{key: value for key, value in self.record.items() if key != "bad_files"}, **reached}
        if self.schedule.state_dict() is not None:
            state["scheduler"] = self.schedule.state_dict()
        folder = self.settings.folder
        if folder.keeps_last:
            self.folder.save_checkpoint("checkpoint_last.pth", self.model, epoch, self.config, state)
        if folder.save_every and epoch and epoch % folder.save_every == 0:
            self.folder.save_checkpoint(f"checkpoint_epoch_{epoch}.pth", self.model, epoch, self.config, state)
        self.record.update(reached)
        return evaluated

    def finish(self, stopped=False) -> RunResult:
        """The reports and summary.json (rank 0): the selected epochs with every split's metrics
        there, the final metrics. `stopped`: a callback ended the run before its last epoch."""
        result = RunResult(self.folder.folder, stopped_after=self.epoch if stopped else None)
        if not self.context.is_main:
            return result
        settings, epoch = self.settings, self.epoch
        summary_best, final = self.best.summary(self.rows, settings.evaluation.evaluation_metrics)
        if not settings.logging.no_reports:
            from evaluation.reports import write_run_reports  # matplotlib only when a run ends

            reports = write_run_reports(self.folder.folder, {split: (result.features, result.labels, result.dataset)
                                                             for split, result in self.evaluated.items()},
                                        settings.training.seed, epoch=epoch, selected=self.best.epochs())
            self.log.images(reports, epoch)
            pages = sorted(glob.glob(os.path.join(self.folder.folder, "retrieval_page_*", "index.html")))
            names = [os.path.basename(path) for path in reports.values()] + \
                [os.path.relpath(path, self.folder.folder) for path in pages]
            print(f"reports: {', '.join(names)}")
        self.folder.write_summary({
            "run_folder": self.folder.folder, "selection_split": self.best.split,
            "selection": self.best.rule(settings.training.n_epochs),
            "protocols": {row["split"]: row.get("protocol", "self") for row in self.rows},
            "epochs": settings.training.n_epochs, "best": summary_best, "final": final,
            "train_seconds": round(self.record["train_seconds"], 1),
            "skipped_batches": self.record["skipped_batches"], "bad_files": self.record["bad_files"],
            "duplicates": self.duplicates,
            "environment": self.config["environment"],
            **({"stopped_after": epoch} if stopped else {})})
        self.log.finish(summary_best)
        print(f"best checkpoints chosen on the {self.best.split} split: "
              + ", ".join(f"{name} {r['value']:.4f} at epoch {r['epoch']}" for name, r in summary_best.items()))
        if stopped:
            print(f"stopped after epoch {epoch} of {settings.training.n_epochs}")
        print(f"run saved in {self.folder.folder}")
        result.metrics, result.selected, result.final = read_csv(self.folder.path("metrics.csv")), summary_best, final
        return result


def check_training_split(settings: RunSettings, train):
    """A SettingError when the training split cannot give the loss a positive and a negative pair,
    naming the settings that cut it out of the dataset's training images, if any did."""
    data = settings.data
    cut = [name for name in ("use_tv_split", "folds", "holdout_classes") if getattr(data, name)]
    split = "the training split" + (" left by " + " and ".join(
        name if name == "use_tv_split" else f"{name} {getattr(data, name)}" for name in cut) if cut else "")
    try:
        criteria.check_training_labels(settings.loss, train.labels, split)
    except UserError as error:
        raise SettingError(str(error), cut) from None


def build_criterion(settings: RunSettings, n_classes: int, n_images: int | None = None):
    """The loss of the settings, for a training split of n_classes classes (and n_images images, the
    bound of a cross-batch memory), with its self-distillation."""
    return criteria.select(settings.loss, n_classes=n_classes, embed_dim=settings.model.embed_dim,
                           distillation=settings.distillation, n_epochs=settings.training.n_epochs,
                           n_images=n_images)
