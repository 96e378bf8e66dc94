"""Train a deep metric learning model, optionally with PSD / OBD-SD: the program and its loop.

    python main.py --dataset cub200 --source /data/cub200 --PSD --OBDP
    torchrun --nproc_per_node N main.py ...   data-parallel on the global batch (distributed.py)

The method (Zeng, Yang, Liu, Satoh, "Improving deep metric learning via self-distillation and
online batch diffusion process", Visual Intelligence 2024) is written out in docs/method.md, and
docs/architecture.md shows which module owns what. In short, a run:
1. parses and checks the flags (parameters.py);
2. loads the dataset splits (datasets/), builds the network (architectures/), the loss with its
   self-distillation (criteria/) and the optimiser (training.py);
3. takes its folder, new or resumed, locked for its life (run_folder.py);
4. evaluates the untrained network (epoch 0), then trains epoch after epoch: batches from the
   sampler (datasampler/), one TrainingStep each, the teacher refreshed after each epoch, the
   evaluation splits evaluated (evaluation/), the best checkpoints kept, checkpoint_last.pth written;
5. writes summary.json and the PNG reports.
"""
import glob
import os
import shlex
import signal
import time

import torch

import architectures
import checkpoints
import criteria
import datasampler
import datasets
import distributed
import evaluation.networks
import evaluation.protocols
import parameters
import training
from datasampler.seeded import SeededBatches, SeededSamples
from errors import Interrupted, UserError, run_command
from evaluation.evaluator import Evaluator
from evaluation.selection import BestEpochs
from run_folder import RunFolder
from run_log import RunLog, online_logging_possible, tensorboard_available


def main(argv=None):
    run_command(train, parameters.parse(argv))


def train(opt):
    """The run of the flags `opt`; returns its folder."""
    training.configure_determinism(opt.deterministic)
    training.seed_everything(opt.seed)
    context = distributed.setup(opt.gpu)
    try:
        return train_on(opt, context)
    finally:
        distributed.teardown()


def train_on(opt, context):
    """The run in this process: rank context.rank of context.world_size; rank 0 alone writes."""
    device = context.device
    with parameters.errors_as_flags():
        distributed.check_batch_split(opt.bs, opt.samples_per_class, context.world_size,
                                      class_balanced=datasampler.draws_class_groups(opt.data_sampler))
    if opt.log_online and context.is_main and not online_logging_possible():
        raise UserError("--log_online needs WANDB_API_KEY in the environment (or WANDB_MODE=offline)")
    if opt.log_tensorboard and context.is_main and not tensorboard_available():
        raise UserError("--log_tensorboard needs the tensorboard package: pip install 'tensorboard>=2.14'")
    splits = datasets.select(opt.dataset, opt.source, augmentation=opt.augmentation,
                             use_tv_split=opt.use_tv_split, tv_split_perc=opt.tv_split_perc,
                             tv_split_by_samples=opt.tv_split_by_samples, on_bad_image=opt.on_bad_image,
                             workers=opt.kernels, holdout_classes=opt.holdout_classes,
                             lists=parameters.dataset_lists(opt),
                             **architectures.preprocessing(opt.arch, opt.image_size))
    bad_files = sorted({path for dataset in splits.values() for path in dataset.bad_files})
    if bad_files and context.is_main:
        print(f"skipped {len(bad_files)} files that are not readable images (first: {bad_files[0]})")
    # --init_from replaces the ImageNet weights: they are not read then.
    model = architectures.select(opt.arch, opt.embed_dim, pretrained=not opt.not_pretrained and not opt.init_from,
                                 pretrained_weights=opt.pretrained_weights, head=opt.head, pooling=opt.pooling,
                                 image_size=opt.image_size).to(device)
    if opt.init_from is not None:
        evaluation.networks.load_into(model, opt.init_from, f"--init_from {opt.init_from}")
    criterion = criteria.select(**parameters.criterion_arguments(opt, splits["train"].n_classes)).to(device)
    distributed.broadcast_parameters([model, criterion])
    if opt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = training.build_optimizer(model, criterion, opt.optim, opt.lr, opt.fc_lr if opt.fc_lr >= 0 else None,
                                         opt.decay, opt.layer_decay)
    with parameters.errors_as_flags():
        sampler = SeededBatches(datasampler.select(opt.data_sampler, splits["train"].labels, opt.bs,
                                                   opt.samples_per_class, opt.seed))
    if context.world_size > 1:
        sampler = distributed.RankShare(sampler, context.rank, context.world_size)
    scheduler = training.LearningRateSchedule(optimizer, opt.scheduler, opt.tau, opt.gamma,
                                              total_steps=opt.n_epochs * len(sampler),
                                              warmup_steps=round(opt.warmup_epochs * len(sampler)))
    # Loaders draw their worker seeds from their own generators, not from the training RNG.
    loader_options = {"num_workers": opt.kernels, "pin_memory": device.type == "cuda",
                      "persistent_workers": opt.kernels > 0}
    train_loader = torch.utils.data.DataLoader(SeededSamples(splits["train"]), batch_sampler=sampler,
                                               generator=torch.Generator(), **loader_options)
    rankings = evaluation.protocols.rankings(splits, parameters.protocol(opt))
    evaluated = {split: dataset for split, dataset in splits.items() if split != "train"}
    if any(ranking.gallery == "train" for ranking in rankings):  # the training images as a gallery
        evaluated["train"] = splits["train"].with_transform(next(iter(evaluated.values())).transform)
    eval_loaders = {split: torch.utils.data.DataLoader(dataset, batch_size=opt.bs, shuffle=False,
                                                       generator=torch.Generator(), **loader_options)
                    for split, dataset in evaluated.items()}
    teacher = criteria.Teacher(model) if criterion.distillation else None
    evaluate = Evaluator(eval_loaders, rankings, opt.evaluation_metrics, opt.seed, parameters.reranking(opt))
    best = BestEpochs(opt.storage_metrics, "val" if "val" in eval_loaders else "test",
                      keeps_checkpoints=opt.save_checkpoints in ("last_and_best", "best"))

    record = {"epoch": 0, "skipped_batches": 0, "train_seconds": 0.0, "wandb_id": None, "bad_files": len(bad_files)}
    with open_run_folder(opt, context) as run:
        try:
            epochs(opt, context, run, splits, model, teacher, criterion, optimizer, scheduler, sampler, train_loader,
                   evaluate, best, record)
        except (KeyboardInterrupt, Interrupted) as error:
            raise Interrupted(getattr(error, "signal_number", signal.SIGINT), how_to_continue(run, opt, record)) \
                from None
    return run.folder


def epochs(opt, context, run, splits, model, teacher, criterion, optimizer, scheduler, sampler, train_loader,
           evaluate, best, record):
    """The training loop, from epoch 0 or from where the run folder's checkpoint_last.pth left off;
    `record` keeps the epoch, counters and clock that checkpoint_last.pth stores."""
    log = RunLog(enabled=context.is_main)
    config = vars(opt).copy()
    keep_last = opt.save_checkpoints in ("last_and_best", "last")
    state, rows = run.last_state()
    if state is not None:
        architectures.load_weights(model, state, run.last_checkpoint)
        criterion.load_state_dict(state["criterion"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state.get("scheduler"))
        checkpoints.restore_rng(state["rng"])
        record.update({key: state.get(key, value) for key, value in record.items() if key != "bad_files"})
        best.records = dict(state["best"])
        print(f"resuming {run.folder} after epoch {record['epoch']}")
    if teacher is not None:
        teacher.refresh(model)
    # The clock goes on from the checkpoint: a resumed run reports its whole training time.
    started = time.time() - record["train_seconds"]
    if opt.log_online:
        record["wandb_id"] = log.start_online(opt.project, opt.group, record["wandb_id"], os.path.basename(run.folder),
                                              config, run.folder)
    if opt.log_tensorboard:
        log.start_tensorboard(run.folder, purge_step=record["epoch"] + 1 if state is not None else None)
    if context.is_main:
        print(f"run folder: {run.folder}\ntrain: {len(splits['train'])} images, {splits['train'].n_classes} classes"
              + "".join(f" | {split}: {len(dataset)} images" for split, dataset in splits.items() if split != "train")
              + (f" | {context.world_size} processes, {opt.bs // context.world_size} images each a step"
                 if context.world_size > 1 else ""))

    def finish_epoch(epoch):
        """Evaluate, keep the best checkpoints, and write checkpoint_last.pth after `epoch`."""
        evaluated = evaluate(model, context.device) if context.is_main else {}
        for split, result in evaluated.items():
            improved = best.update(epoch, split, result.metrics)
            for name in improved if best.keeps_checkpoints else ():
                run.save_checkpoint(best.records[name]["checkpoint"], model, epoch, config)
            row = {"epoch": epoch, "split": split, "protocol": result.protocol, **result.metrics,
                   "best_for": " ".join(improved)}
            rows.append(row)
            run.append("metrics.csv", row)
            log.evaluation(row)
        reached = {"epoch": epoch, "train_seconds": time.time() - started}
        state = {"criterion": criterion.state_dict(), "optimizer": optimizer.state_dict(),
                 "rng": checkpoints.rng_state(), "best": best.records,
                 **{key: value for key, value in record.items() if key != "bad_files"}, **reached}
        if scheduler.state_dict() is not None:
            state["scheduler"] = scheduler.state_dict()
        if keep_last:
            run.save_checkpoint("checkpoint_last.pth", model, epoch, config, state)
        if opt.save_every and epoch and epoch % opt.save_every == 0:
            run.save_checkpoint(f"checkpoint_epoch_{epoch}.pth", model, epoch, config, state)
        record.update(reached)
        return evaluated

    evaluated = finish_epoch(0) if state is None else {}
    step = training.TrainingStep(model, teacher and teacher.network, criterion, optimizer, amp=opt.amp,
                                 channels_last=opt.channels_last, compile=opt.compile,
                                 skip_nonfinite=opt.skip_nonfinite, clip_grad=opt.clip_grad, schedule=scheduler)
    for epoch in range(record["epoch"], opt.n_epochs):
        distributed.sync_random_state()  # rank 0 alone evaluated: its generators may have moved
        model.set_backbone_trainable(epoch >= opt.freeze_backbone_epochs)
        sampler.set_epoch(epoch)
        try:
            losses = training.train_one_epoch(step, train_loader, context.device, epoch, opt.n_epochs,
                                              show_progress=context.is_main, progress_every=opt.progress_every)
        except training.NonFiniteLoss as error:
            raise UserError(f"the loss became {error.args[0]} in {error.where}; the last good checkpoint "
                            f"{run.last_checkpoint} is kept; lower --lr or --kd_lambda, or pass --skip_nonfinite "
                            "to skip such batches") from None
        record["skipped_batches"] += losses["skipped_batches"]
        scheduler.after_epoch()
        if teacher is not None:
            teacher.refresh(model)
        training_row = {"epoch": epoch + 1, **losses, "lr": opt.lr * scheduler.factor(),
                        "seconds": round(time.time() - started, 1)}
        run.append("training.csv", training_row)
        log.online({f"train/{term}": value for term, value in losses.items()}, epoch + 1)
        evaluated = finish_epoch(epoch + 1)
        distributed.barrier()
    if context.is_main:
        finish(opt, run, log, rows, best, record, evaluated)


def open_run_folder(opt, context):
    """The run's folder, chosen and locked by rank 0, its config checked (resume) and written."""
    if not context.is_main:
        return RunFolder.reader(distributed.broadcast_object(None))
    if opt.resume is None:
        name = opt.savename or f"{opt.dataset}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
        run = RunFolder.create(opt.save_path, name, opt.overwrite)
    else:
        run = RunFolder.resume(opt.save_path, folder=opt.resume, name=opt.savename)
    saved = run.saved_config()
    if saved is not None:
        parameters.check_resumable(saved, vars(opt), opt.resume_force, run.folder)
    run.write_config(vars(opt))
    distributed.broadcast_object(run.folder)
    return run


def finish(opt, run, log, rows, best, record, evaluated):
    """The reports and summary.json: the selected epochs with every split's metrics there, the final metrics."""
    summary_best, final = best.summary(rows, opt.evaluation_metrics)
    if not opt.no_reports:
        from evaluation.reports import write_run_reports  # matplotlib only when a run ends

        reports = write_run_reports(run.folder, {split: (result.features, result.labels, result.dataset)
                                                 for split, result in evaluated.items()}, opt.seed,
                                    epoch=record["epoch"], selected=best.epochs())
        log.images(reports, record["epoch"])
        pages = sorted(glob.glob(os.path.join(run.folder, "retrieval_page_*", "index.html")))  # HTML, not logged
        names = [os.path.basename(path) for path in reports.values()] + [os.path.relpath(path, run.folder)
                                                                         for path in pages]
        print(f"reports: {', '.join(names)}")
    run.write_summary({"run_folder": run.folder, "selection_split": best.split, "selection": best.rule(opt.n_epochs),
                       "protocols": {row["split"]: row.get("protocol", "self") for row in rows},
                       "epochs": opt.n_epochs, "best": summary_best, "final": final,
                       "train_seconds": round(record["train_seconds"], 1),
                       "skipped_batches": record["skipped_batches"], "bad_files": record["bad_files"]})
    log.finish(summary_best)
    print(f"best checkpoints chosen on the {best.split} split: "
          + ", ".join(f"{name} {r['value']:.4f} at epoch {r['epoch']}" for name, r in summary_best.items()))
    print(f"run saved in {run.folder}")


def how_to_continue(run, opt, record):
    """One line: what an interrupted run's folder holds, and the command that continues it."""
    if not os.path.exists(run.last_checkpoint):
        return f"{run.folder} holds no checkpoint_last.pth to continue from; start the run again"
    return (f"{run.folder} holds epoch {record['epoch']} of {opt.n_epochs}; continue with: python main.py --config "
            f"{shlex.quote(run.path('config.json'))} --resume {shlex.quote(run.folder)}")


if __name__ == "__main__":
    main()
