"""Wall time and peak memory of the evaluation on a synthetic Stanford-Online-Products-sized
test set (60,502 x 128 embeddings, 11,316 classes of 2 or more images), against
pytorch-metric-learning's AccuracyCalculator on the same embeddings in the same run.

    python -m benchmarks.evaluation [--size sop|small] [--samples N] [--classes C] [--dim D]

--size small is a tenth of SOP (6,050 x 128, 1,131 classes), for a quick run.

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

SIZES = {"sop": (60502, 11316), "small": (6050, 1131)}
OURS_FULL = ["e_recall@1", "e_recall@10", "e_recall@100", "e_recall@1000", "nmi", "mAP@R", "r_precision"]
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


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(kind, data, names):
    features, labels = np.load(os.path.join(data, "features.npy")), np.load(os.path.join(data, "labels.npy"))
    if kind == "ours":
        import evaluation

        before, cpu = peak_rss_bytes(), cpu_seconds()
        start = time.perf_counter()
        values = evaluation.compute(features, labels, names)
    else:
        import torch
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calculator = AccuracyCalculator(include=tuple(SHARED.values()), k="max_bin_count")
        queries, query_labels = torch.from_numpy(features), torch.from_numpy(labels)
        before, cpu = peak_rss_bytes(), cpu_seconds()
        start = time.perf_counter()
        values = calculator.get_accuracy(queries, query_labels)
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

    n_samples, n_classes = args.samples or SIZES[args.size][0], args.classes or SIZES[args.size][1]
    features, labels = synthetic_embeddings(n_samples, n_classes, args.dim)
    cores = len(os.sched_getaffinity(0))
    print(f"{n_samples} x {args.dim} embeddings, {n_classes} classes (sizes {np.bincount(labels).min()}-"
          f"{np.bincount(labels).max()}), {cores} cores, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as data:
        np.save(os.path.join(data, "features.npy"), features)
        np.save(os.path.join(data, "labels.npy"), labels)
        rows = [("this codebase: " + " ".join(OURS_FULL), measure("ours", data, OURS_FULL)),
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
