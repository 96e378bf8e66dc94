"""The unseen-class protocol of the DML-for-classification study, in one command.

    python -m studies.unseen_classes --holdout_classes N [main.py flags or --config FILE]

It trains two networks with the same flags, in this process (training.run):
- all_classes: on every training class;
- without_last_<N>: without the last N training classes (in label order).
Both keep the same share of every training class's images out of training (--use_tv_split
--tv_split_by_samples are switched on; --tv_split_perc is the share trained on). Both are
evaluated on those held-out images of all the training classes, the full class set, with the
network of their last epoch (no checkpoint selection, since the evaluation images are the
validation split). As in the study, each held-out image queries the training images of all the
classes (--evaluation_protocol train_gallery, the default here); with --evaluation_protocol self
it queries the other held-out images instead. The Precision@1 of a class is the share of its
images whose nearest neighbour is of the same class.

The protocol folder, --save_path/<--savename or <dataset>_without_last_<N>>, holds both run
folders and two tables (also W&B tables with --log_online):
- per_class_precision_at_1.csv: class, held_out, images, all_classes, without_last_<N>, drop;
- summary.csv: the mean over the held-out, the seen and all classes of each model's per-class
  Precision@1 and of the drop (all_classes minus without_last_<N>).
"""
import csv
import dataclasses
import os
import sys

import numpy as np

import datasampler
import datasets
import distributed
import evaluation
import parameters
from errors import SettingError, UserError, run_command
from evaluation import evaluator, networks
from training.folder import RunFolder
from training.run import run

# the words of the samplers' messages, by the flags they stand for
SAMPLER_SETTINGS = {"batch_size": "bs", "samples_per_class": "samples_per_class", "sampler": "data_sampler"}
PER_CLASS_TABLE = "per_class_precision_at_1.csv"
SUMMARY_TABLE = "summary.csv"


def per_class_precision_at_1(features, labels, n_classes, gallery=None):
    """Per class: the share of its images whose nearest image (euclidean) has its class, that image
    taken among the other images or, with `gallery` = (features, labels), among the gallery's;
    nan for a class without images."""
    if gallery is None:
        hits = labels[evaluation.nearest_neighbours(features, 1)[:, 0]] == labels
    else:
        hits = gallery[1][evaluation.search(features, gallery[0], 1)[:, 0]] == labels
    hits = hits.astype(np.float64)
    counts = np.bincount(labels, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(labels, weights=hits, minlength=n_classes) / counts, counts


def last_epoch_embeddings(folder, evaluate, device):
    """{split: (features, labels)} of the evaluator's splits by the network of the run's checkpoint_last.pth."""
    network = networks.load(os.path.join(folder, "checkpoint_last.pth")).network.to(device)
    return evaluate.embed_splits(network, device)


def tables(class_names, n_holdout, counts, precision_all, precision_holdout, holdout_name):
    """(per-class rows, summary rows) as lists of dicts."""
    n_classes = len(class_names)
    held_out = np.arange(n_classes) >= n_classes - n_holdout
    drop = precision_all - precision_holdout
    per_class = [{"class": name, "held_out": bool(held_out[label]), "images": int(counts[label]),
                  "all_classes": precision_all[label], holdout_name: precision_holdout[label], "drop": drop[label]}
                 for label, name in enumerate(class_names)]
    summary = []
    for group, members in (("held out", held_out), ("seen", ~held_out), ("all", np.ones(n_classes, bool))):
        summary.append({"classes": group, "n_classes": int(members.sum()),
                        "all_classes": np.nanmean(precision_all[members]),
                        holdout_name: np.nanmean(precision_holdout[members]), "drop": np.nanmean(drop[members])})
    return per_class, summary


def write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: f"{value:.6f}" if isinstance(value, float) else value for key, value in row.items()}
                         for row in rows)


def log_tables(settings, folder, per_class, summary):
    import wandb

    online = wandb.init(project=settings.logging.project, group=settings.logging.group or None,
                        name=os.path.basename(folder), dir=folder, job_type="unseen_classes",
                        config={"holdout_classes": settings.data.holdout_classes, "dataset": settings.data.dataset})
    for name, rows in (("per_class_precision_at_1", per_class), ("summary", summary)):
        online.log({f"unseen_classes/{name}": wandb.Table(columns=list(rows[0]),
                                                          data=[list(row.values()) for row in rows])})
    online.finish()


def trainings(settings):
    """{name: the settings of each training of the protocol}, every one checked, its data loaded
    once, before the first starts (and before the protocol's folder is made)."""
    n = settings.data.holdout_classes
    runs = {}
    for name, holdout in (("all_classes", 0), (f"without_last_{n}", n)):
        try:
            runs[name] = settings.replace(data={"use_tv_split": True, "tv_split_by_samples": True,
                                                "holdout_classes": holdout})
            splits = datasets.load(runs[name].data, workers=settings.training.kernels,
                                   **settings.model.preprocessing())
            try:  # the batches its training classes allow, as training.run draws them
                datasampler.batches(runs[name].batches, splits["train"].labels, settings.training.seed)
            except SettingError:
                raise
            except UserError as error:
                raise SettingError(str(error), SAMPLER_SETTINGS) from None
        except UserError as error:
            message = parameters.flags_named(error) if isinstance(error, SettingError) else str(error)
            raise UserError(f"the {name} training of the protocol cannot run: {message}") from None
    return runs


def run_protocol(settings):
    """The protocol for the run settings `settings` (their holdout_classes N)."""
    n = settings.data.holdout_classes
    if n < 1:
        raise UserError("the unseen-class protocol needs --holdout_classes N, the number of last training classes "
                        "the second network does not see (N >= 1)")
    if settings.folder.resume is not None:
        raise UserError("the unseen-class protocol starts two fresh runs; drop --resume")
    holdout_name = f"without_last_{n}"
    protocol = settings.evaluation.evaluation_protocol
    if protocol not in ("train_gallery", "self"):
        raise UserError("the unseen-class protocol ranks the held-out images against the training images "
                        "(--evaluation_protocol train_gallery) or against each other (self)")
    runs = trainings(settings)
    name = settings.folder.savename or f"{settings.data.dataset}_{holdout_name}"
    with RunFolder.create(settings.folder.save_path, name, settings.folder.overwrite) as created:
        folder = created.folder
    print(f"unseen-class protocol in {folder}")
    for name, run_settings in runs.items():
        try:
            run(run_settings.replace(folder={"save_path": folder, "savename": name, "overwrite": False}))
        except SettingError as error:
            raise UserError(parameters.flags_named(error)) from None
    # The held-out images of every training class, against the training images of all the classes.
    everything = dataclasses.replace(runs["all_classes"].data, holdout_classes=0)
    splits = datasets.load(everything, workers=settings.training.kernels, **settings.model.preprocessing())
    evaluate = evaluator.setup(splits, settings.evaluation, batch_size=settings.batches.bs,
                               workers=settings.training.kernels, rows=["val"])
    dataset = splits["val"]
    device = distributed.select_device(settings.training.gpu)
    precision = {}
    for name in runs:
        embedded = last_epoch_embeddings(os.path.join(folder, name), evaluate, device)
        gallery = None if protocol == "self" else embedded["train"]
        precision[name], counts = per_class_precision_at_1(embedded["val"][0], dataset.labels, dataset.n_classes,
                                                           gallery)
    per_class, summary = tables(dataset.class_names, n, counts, precision["all_classes"], precision[holdout_name],
                                holdout_name)
    write_csv(os.path.join(folder, PER_CLASS_TABLE), per_class)
    write_csv(os.path.join(folder, SUMMARY_TABLE), summary)
    if settings.logging.log_online:
        log_tables(settings, folder, per_class, summary)
    against = "the training images of all classes" if protocol == "train_gallery" else "each other"
    print(f"Precision@1 per class of the held-out images of all {dataset.n_classes} training classes, against "
          f"{against}, networks of the last epoch:")
    print(f"{'classes':>10}  {'n':>5}  {'all_classes':>12}  {holdout_name:>18}  {'drop':>8}")
    for row in summary:
        print(f"{row['classes']:>10}  {row['n_classes']:>5}  {row['all_classes']:>12.4f}  "
              f"{row[holdout_name]:>18.4f}  {row['drop']:>8.4f}")
    print(f"tables: {os.path.join(folder, PER_CLASS_TABLE)}, {os.path.join(folder, SUMMARY_TABLE)}")
    return folder


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
    # The study's own default protocol: the held-out images query the training images.
    run_command(run_protocol, parameters.parse(argv, defaults={"evaluation_protocol": "train_gallery"}))


if __name__ == "__main__":
    main()
