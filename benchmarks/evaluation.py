"""Wall time and peak memory of the evaluation on synthetic embeddings of a benchmark's test set,
against pytorch-metric-learning's AccuracyCalculator on the same embeddings in the same run.

    python -m benchmarks.evaluation [--size sop|small|inshop|sop_gallery] [--samples N] [--classes C] [--dim D]

--size sop: Stanford Online Products' test split ranked against itself (60,502 x 128
embeddings, 11,316 classes of 2 or more images); small: a tenth of it, for a quick run;
inshop: In-Shop's 14,218 queries against its 12,612 gallery images (3,985 items, each with a
query and a gallery image at least); sop_gallery: SOP's size as two halves, 30,251 queries
against 30,251 gallery images of the same 11,316 classes. Query and gallery sets are compared
with AccuracyCalculator's ref_includes_query=False.

Each measurement runs in its own child process, so its peak resident memory (ru_maxrss, which
counts faiss's and torch's native allocations too) is its own. Rows:
- this codebase, the default online_products metrics (Recall@1,10,100,1000, NMI) plus mAP@R
  and r_precision;
- this codebase and AccuracyCalculator (k="max_bin_count", faiss kNN), each on the metrics
  both compute: precision@1, r_precision, MAP@R.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from errors import CommandParser

# (queries, gallery images, classes); no gallery: the queries are ranked against themselves
SIZES = {"sop": (60502, 0, 11316), "small": (6050, 0, 1131), "inshop": (14218, 12612, 3985),
         "sop_gallery": (30251, 30251, 11316)}
OURS_FULL = ["e_recall@1", "e_recall@10", "e_recall@100", "e_recall@1000", "nmi", "mAP@R", "r_precision"]
OURS_GALLERY = ["e_recall@1", "e_recall@10", "e_recall@20", "e_recall@30", "e_recall@40", "mAP@R", "r_precision"]
SHARED = {"precision@1": "precision_at_1", "r_precision": "r_precision", "mAP@R": "mean_average_precision_at_r"}


def synthetic_embeddings(n_samples, n_classes, dim, seed=0):
    """L2-normalised class centres plus noise; every class has at least 2 images, as in SOP."""
    rng = np.random.default_rng(seed)
    sizes = 2 + rng.multinomial(n_samples - 2 * n_classes, np.full(n_classes, 1 / n_classes))
    labels = rng.permutation(np.repeat(np.arange(n_classes), sizes))
    centres = rng.standard_normal((n_classes, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    features = centres[labels] + 0.115 * rng.standard_normal((n_samples, dim), dtype=np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return features, labels


def query_and_gallery(n_queries, n_gallery, n_classes, dim, seed=0):
    """Synthetic embeddings split into queries and a gallery, each class with one image at least in each."""
    features, labels = synthetic_embeddings(n_queries + n_gallery, n_classes, dim, seed)
    rng = np.random.default_rng(seed + 1)
    order = np.argsort(labels, kind="stable")
    first = np.r_[0, np.flatnonzero(np.diff(labels[order])) + 1]  # each class's first image in `order`
    in_query = np.zeros(len(labels), dtype=bool)
    in_query[order[first]] = True
    others = np.setdiff1d(np.arange(len(labels)), order[np.r_[first, first + 1]])  # the second stays in the gallery
    in_query[rng.choice(others, n_queries - len(first), replace=False)] = True
    return (features[in_query], labels[in_query]), (features[~in_query], labels[~in_query])


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(kind, data, names):
    features, labels = np.load(os.path.join(data, "features.npy")), np.load(os.path.join(data, "labels.npy"))
    gallery = None
    if os.path.exists(os.path.join(data, "gallery.npy")):
        gallery = np.load(os.path.join(data, "gallery.npy")), np.load(os.path.join(data, "gallery_labels.npy"))
    if kind == "ours":
        import evaluation

        before, cpu = peak_rss_bytes(), cpu_seconds()
        start = time.perf_counter()
        values = evaluation.compute(features, labels, names, gallery=gallery)
    else:
        import torch
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calculator = AccuracyCalculator(include=tuple(SHARED.values()), k="max_bin_count")
        arguments = [torch.from_numpy(features), torch.from_numpy(labels)]
        if gallery is not None:
            arguments += [torch.from_numpy(gallery[0]), torch.from_numpy(gallery[1])]
        before, cpu = peak_rss_bytes(), cpu_seconds()
        start = time.perf_counter()
        values = calculator.get_accuracy(*arguments, ref_includes_query=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds() - cpu, "peak_rss": peak_rss_bytes(),
                      "rss_before": before, "values": values}))


def measure(kind, data, names):
    result = subprocess.run([sys.executable, "-m", "benchmarks.evaluation", "--worker", kind, "--data", data,
                             "--names", *names], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = CommandParser(command="python -m benchmarks.evaluation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="sop", help="preset number of samples and classes")
    parser.add_argument("--samples", type=int, default=None, help="overrides --size")
    parser.add_argument("--classes", type=int, default=None, help="overrides --size")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--worker", choices=["ours", "pml"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--names", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.data, args.names)

    n_queries, n_gallery, n_classes = SIZES[args.size]
    n_queries, n_classes = args.samples or n_queries, args.classes or n_classes
    cores = len(os.sched_getaffinity(0))
    if n_gallery:
        (features, labels), gallery = query_and_gallery(n_queries, n_gallery, n_classes, args.dim)
        print(f"{len(features)} queries against {len(gallery[0])} gallery images, {args.dim}-d, {n_classes} classes")
    else:
        features, labels = synthetic_embeddings(n_queries, n_classes, args.dim)
        gallery = None
        print(f"{n_queries} x {args.dim} embeddings ranked against themselves, {n_classes} classes (sizes "
              f"{np.bincount(labels).min()}-{np.bincount(labels).max()})")
    print(f"{cores} cores, load average {os.getloadavg()[0]:.1f} at start")
    full = OURS_GALLERY if gallery is not None else OURS_FULL
    with tempfile.TemporaryDirectory() as data:
        np.save(os.path.join(data, "features.npy"), features)
        np.save(os.path.join(data, "labels.npy"), labels)
        if gallery is not None:
            np.save(os.path.join(data, "gallery.npy"), gallery[0])
            np.save(os.path.join(data, "gallery_labels.npy"), gallery[1])
        rows = [("this codebase: " + " ".join(full), measure("ours", data, full)),
                ("this codebase: precision@1 r_precision mAP@R", measure("ours", data, list(SHARED))),
                ("AccuracyCalculator: precision_at_1 r_precision MAP@R", measure("pml", data, []))]
    print(f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| run | wall time (s) | CPU time (s) | peak RSS (GB) | RSS before computing (GB) |")
    print("|---|---:|---:|---:|---:|")
    for title, row in rows:
        print(f"| {title} | {row['seconds']:.1f} | {row['cpu_seconds']:.1f} | {row['peak_rss'] / 1e9:.2f} "
              f"| {row['rss_before'] / 1e9:.2f} |")
    ours, theirs = rows[1][1], rows[2][1]
    print(f"\nAccuracyCalculator / this codebase, same metrics: {theirs['seconds'] / ours['seconds']:.2f}x")
    print("\n| metric | this codebase | AccuracyCalculator | difference |\n|---|---:|---:|---:|")
    for name, theirs_name in SHARED.items():
        ours_value, theirs_value = ours["values"][name], theirs["values"][theirs_name]
        print(f"| {name} | {ours_value:.6f} | {theirs_value:.6f} | {abs(ours_value - theirs_value):.1e} |")
    print("\n" + ", ".join(f"{name} {value:.4f}" for name, value in rows[0][1]["values"].items()))


if __name__ == "__main__":
    main()
