"""Is B better than A, beyond the noise? The difference of two groups of runs, per metric, with a
95% bootstrap confidence interval and a p-value.

    python -m studies.compare A B [--metrics mAP@R e_recall@1] [--split test] [--select METRIC | --final]
                                  [--out DIR] [--confidence 0.95] [--resamples 10000] [--seed 0]

A and B are run folders, or folders holding them at any depth (a study's final/ folder, a
Sample_Runs output). Each run contributes the metric of `--split` at the epoch it selected, as
studies.summarize reads it. When both groups hold the same runs by (seed, fold), the runs are
paired: the difference is the mean of the paired differences B - A, its interval a bootstrap of
them, its p-value the paired t-test's (scipy.stats.bootstrap, ttest_rel). Otherwise the groups are
independent: the difference of the means, a two-sample bootstrap, and Welch's t-test (ttest_ind
without equal variances). The table goes to the console and to DIR/comparison.csv, the intervals
to DIR/comparison.png.
"""
import csv
import math
import os
import sys

import numpy as np

from errors import CommandParser, UserError, run_command
from studies import summarize


def group(path, split, select, final):
    """{(seed, fold): {metric: value}} of the finished runs under `path`."""
    runs = [summarize.load_run(folder) for folder in summarize.find_runs([path])]
    finished = [run for run in runs if run is not None]
    if not finished:
        raise UserError(f"{path} holds no finished run (no summary.json); compare finished runs")
    values = {}
    for run in finished:
        key = (run["config"].get("seed"), run["config"].get("fold", 0))
        if key in values:
            raise UserError(f"{path} holds two runs of seed {key[0]}, fold {key[1]} ({run['folder']}); a group "
                            "holds one run a seed and fold")
        _, row = summarize.chosen_row(run, split, select, final)
        values[key] = {name: float(value) for name, value in row.items() if name not in ("epoch", "split", "protocol",
                                                                                           "best_for") and value}
    return values


def difference(a, b, paired, confidence=0.95, resamples=10000, seed=0):
    """{"difference", "low", "high", "p", "test"} of B - A: paired (equal-length, matched arrays) or
    independent samples."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if paired:
        differences = b - a
        estimate = float(differences.mean())
        if np.ptp(differences) == 0:  # every resample gives the same mean: the interval is that point
            low = high = estimate
        else:
            interval = stats.bootstrap((differences,), np.mean, confidence_level=confidence, n_resamples=resamples,
                                       random_state=np.random.default_rng(seed)).confidence_interval
            low, high = interval.low, interval.high
        p = stats.ttest_rel(b, a).pvalue if np.ptp(differences) > 0 else (1.0 if estimate == 0 else 0.0)
        return {"difference": estimate, "low": float(low), "high": float(high), "p": float(p), "test": "paired t"}

    def mean_difference(second, first, axis):
        return np.mean(second, axis=axis) - np.mean(first, axis=axis)

    estimate = float(b.mean() - a.mean())
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        low = high = estimate
    else:
        interval = stats.bootstrap((b, a), mean_difference, confidence_level=confidence, n_resamples=resamples,
                                   random_state=np.random.default_rng(seed)).confidence_interval
        low, high = interval.low, interval.high
    p = stats.ttest_ind(b, a, equal_var=False).pvalue
    return {"difference": estimate, "low": float(low), "high": float(high), "p": float(p),
            "test": "Welch t"}


def compare(a, b, metrics=None, confidence=0.95, resamples=10000, seed=0):
    """Table rows, one a metric, of groups `a` and `b` ({key: {metric: value}})."""
    paired = set(a) == set(b) and len(a) > 1
    keys = sorted(a) if paired else None
    common = [name for name in next(iter(a.values())) if all(name in run for run in [*a.values(), *b.values()])]
    metrics = metrics or common
    missing = [name for name in metrics if name not in common]
    if missing:
        raise UserError(f"not every run has {missing[0]}; choose --metrics among {', '.join(common)}")
    if min(len(a), len(b)) < 2:
        raise UserError(f"a comparison needs at least 2 runs a group, not {len(a)} and {len(b)}")
    rows = []
    for name in metrics:
        first = [a[key][name] for key in keys] if paired else [run[name] for run in a.values()]
        second = [b[key][name] for key in keys] if paired else [run[name] for run in b.values()]
        rows.append({"metric": name, "runs_a": len(first), "mean_a": float(np.mean(first)), "runs_b": len(second),
                     "mean_b": float(np.mean(second)),
                     **difference(first, second, paired, confidence, resamples, seed)})
    return rows


def write(rows, folder, names, confidence):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "comparison.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.6))
    positions = np.arange(len(rows))[::-1]
    estimates = np.array([row["difference"] for row in rows])
    errors = np.array([[row["difference"] - row["low"], row["high"] - row["difference"]] for row in rows]).T
    colours = ["tab:green" if row["low"] > 0 else "tab:red" if row["high"] < 0 else "tab:grey" for row in rows]
    for position, estimate, error, colour in zip(positions, estimates, errors.T, colours):
        axes.errorbar(estimate, position, xerr=error[:, None], fmt="o", color=colour, capsize=4)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_yticks(positions, [f"{row['metric']}  (p {row['p']:.3g})" for row in rows])
    axes.set_xlabel(f"{names[1]} - {names[0]}: difference with its {confidence:.0%} confidence interval")
    axes.set_title(f"{names[1]} against {names[0]} ({rows[0]['test']}, {rows[0]['runs_a']} and "
                   f"{rows[0]['runs_b']} runs)")
    figure.tight_layout()
    figure.savefig(os.path.join(folder, "comparison.png"), dpi=110)
    plt.close(figure)


def build_parser():
    parser = CommandParser(command="python -m studies.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", metavar="A", help="the first group: run folders under this folder")
    parser.add_argument("b", metavar="B", help="the second group")
    parser.add_argument("--metrics", nargs="+", default=None, help="metrics compared (default: all the runs have)")
    parser.add_argument("--split", default="test", help="the split whose metrics are compared")
    parser.add_argument("--select", default=None,
                        help="metric whose best epoch on each run's selection split is taken (default: its first "
                             "storage metric)")
    parser.add_argument("--final", action="store_true", help="take each run's last epoch instead")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where comparison.csv and comparison.png go (default: Training_Results/comparisons/"
                             "<A>_vs_<B>)")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    return parser


def run(opt):
    if opt.final and opt.select:
        raise UserError("--final takes the last epoch, --select a best one; drop one of them")
    if not 0 < opt.confidence < 1 or opt.resamples < 100:
        raise UserError("--confidence must lie in (0, 1) and --resamples be at least 100")
    a, b = (group(path, opt.split, opt.select, opt.final) for path in (opt.a, opt.b))
    names = [os.path.basename(os.path.normpath(path)) for path in (opt.a, opt.b)]
    rows = compare(a, b, opt.metrics, opt.confidence, opt.resamples, opt.seed)
    print(f"B = {opt.b} against A = {opt.a}, {opt.split} split, {rows[0]['test']} "
          f"({rows[0]['runs_a']} and {rows[0]['runs_b']} runs); B - A with its {opt.confidence:.0%} bootstrap "
          "confidence interval:")
    print(f"| metric | A | B | B - A | {opt.confidence:.0%} CI | p |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['metric']} | {row['mean_a']:.4f} | {row['mean_b']:.4f} | {row['difference']:+.4f} | "
              f"[{row['low']:+.4f}, {row['high']:+.4f}] | {format_p(row['p'])} |")
    folder = opt.out or os.path.join("Training_Results", "comparisons", f"{names[0]}_vs_{names[1]}")
    write(rows, folder, names, opt.confidence)
    print(f"written: {os.path.join(folder, 'comparison.csv')}, {os.path.join(folder, 'comparison.png')}")
    return rows


def format_p(p):
    return "nan" if math.isnan(p) else f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"


def main(argv=None):
    run_command(run, build_parser().parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
