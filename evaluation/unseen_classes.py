"""The unseen-class protocol of the DML-for-classification study, in one command.

    python -m evaluation.unseen_classes --holdout_classes N [main.py flags or --config FILE]

It trains two networks with the same flags:
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
import os
import subprocess
import sys

import numpy as np
import torch

import architectures
import datasets
import distributed
import evaluation
import parameters
from errors import UserError, run_command
from evaluation import networks
from run_folder import RunFolder

MAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "main.py")

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


def evaluation_splits(opt):
    """(the held-out images of every training class, the training images of all the classes),
    both under the evaluation transform; they share the class labels."""
    splits = datasets.select(opt.dataset, opt.source, augmentation=opt.augmentation, use_tv_split=True,
                             tv_split_perc=opt.tv_split_perc, tv_split_by_samples=True,
                             on_bad_image=opt.on_bad_image, workers=opt.kernels,
                             lists=parameters.dataset_lists(opt),
                             **architectures.preprocessing(opt.arch, opt.image_size))
    return splits["val"], splits["train"].with_transform(splits["val"].transform)


def embed_last_epoch(run_folder, dataset, opt, device):
    """Embeddings of `dataset` by the network of the run's checkpoint_last.pth."""
    network = networks.load(os.path.join(run_folder, "checkpoint_last.pth")).network.to(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=opt.bs, shuffle=False, num_workers=opt.kernels)
    return evaluation.embed(network, loader, device, description=f"embedding {os.path.basename(run_folder)}")[0]


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


def log_tables(opt, folder, per_class, summary):
    import wandb

    online = wandb.init(project=opt.project, group=opt.group or None, name=os.path.basename(folder), dir=folder,
                        job_type="unseen_classes", config={"holdout_classes": opt.holdout_classes,
                                                           "dataset": opt.dataset})
    for name, rows in (("per_class_precision_at_1", per_class), ("summary", summary)):
        online.log({f"unseen_classes/{name}": wandb.Table(columns=list(rows[0]),
                                                          data=[list(row.values()) for row in rows])})
    online.finish()


def run_protocol(opt, argv):
    """The protocol for the flags `opt`, parsed from the command line `argv`."""
    n = opt.holdout_classes
    if n < 1:
        raise UserError("the unseen-class protocol needs --holdout_classes N, the number of last training classes "
                        "the second network does not see (N >= 1)")
    if opt.resume is not None:
        raise UserError("the unseen-class protocol starts two fresh runs; drop --resume")
    holdout_name = f"without_last_{n}"
    protocol = opt.evaluation_protocol or "train_gallery"
    if protocol not in ("train_gallery", "self"):
        raise UserError("the unseen-class protocol ranks the held-out images against the training images "
                        "(--evaluation_protocol train_gallery) or against each other (self)")
    with RunFolder.create(opt.save_path, opt.savename or f"{opt.dataset}_{holdout_name}", opt.overwrite) as created:
        folder = created.folder
    print(f"unseen-class protocol in {folder}")
    runs = {"all_classes": 0, holdout_name: n}
    for name, holdout in runs.items():
        # Each training is a run of main.py, with the protocol's flags after the user's (the last one counts).
        command = [sys.executable, MAIN, *argv, "--use_tv_split", "--tv_split_by_samples", "--save_path", folder,
                   "--savename", name, "--holdout_classes", str(holdout), "--evaluation_protocol", protocol]
        if subprocess.run([word for word in command if word != "--overwrite"]).returncode != 0:
            raise UserError(f"the {name} training of the protocol failed (its message is above); "
                            f"the protocol folder {folder} keeps what was done")
    dataset, training_images = evaluation_splits(opt)
    device = distributed.select_device(opt.gpu)
    precision = {}
    for name in runs:
        features = embed_last_epoch(os.path.join(folder, name), dataset, opt, device)
        gallery = None if protocol == "self" else \
            (embed_last_epoch(os.path.join(folder, name), training_images, opt, device), training_images.labels)
        precision[name], counts = per_class_precision_at_1(features, dataset.labels, dataset.n_classes, gallery)
    per_class, summary = tables(dataset.class_names, n, counts, precision["all_classes"], precision[holdout_name],
                                holdout_name)
    write_csv(os.path.join(folder, PER_CLASS_TABLE), per_class)
    write_csv(os.path.join(folder, SUMMARY_TABLE), summary)
    if opt.log_online:
        log_tables(opt, folder, per_class, summary)
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
    run_command(run_protocol, parameters.parse(argv), argv)


if __name__ == "__main__":
    main()
