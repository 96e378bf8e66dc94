"""Is B better than A, beyond the noise? The difference of two groups of runs, per metric, with a
95% bootstrap confidence interval and a p-value.

    python -m studies.compare A B [--metrics mAP@R e_recall@1] [--split test] [--select METRIC | --final]
                                  [--out DIR] [--overwrite] [--confidence 0.95] [--resamples 10000] [--seed 0]

A and B are run folders, or folders holding them at any depth (a study's final/ folder, a
Sample_Runs output). Each run contributes the metric of `--split` at the epoch it selected, as
studies.summarize reads it. When both groups hold the same runs by (seed, fold), the runs are
paired: the difference is the mean of the paired differences B - A, its interval a bootstrap of
them, its p-value the paired t-test's (scipy.stats.bootstrap, ttest_rel). Otherwise the groups are
independent: the difference of the means, a two-sample bootstrap, and Welch's t-test (ttest_ind
without equal variances). Both take the groups' runs as distinct: groups that share a run (the same
folder, or a copy of one: the same settings and seed) are refused.

The console names how each group selected its epochs and the settings in which the groups differ,
says when there are too few runs for the interval to mean much, and when every pair differs by the
same amount (or each group's runs are all alike) there is no spread to test: the interval is that
value and no p-value is given, in words. The table goes to the console and to DIR/comparison.csv,
the intervals to DIR/comparison.png. DIR is by default Training_Results/comparisons/<A>_vs_<B>, each
group named by its folder (a study's final/ by the study's); a DIR that holds a comparison is
refused unless --overwrite.
"""
import csv
import json
import math
import os
import sys

import numpy as np

from errors import CommandParser, UserError, counted, run_command
from evaluation.selection import is_candidate
from studies import intervals, summarize


# Differences (paired) or values (independent) that vary by no more than this are taken as one
# value: far above float64 rounding (1e-16 for values near 1), far below any spread a metric shows.
TOLERANCE = 1e-9


def finished_runs(path):
    """The finished runs under `path`, as studies.summarize loads them."""
    runs = [summarize.load_run(folder) for folder in summarize.find_runs([path])]
    finished = [run for run in runs if run is not None]
    if not finished:
        raise UserError(f"{path} holds no finished run (no summary.json); compare finished runs")
    return finished


def group(runs, path, split, select, final):
    """{(seed, fold): {metric: value}} of `runs`, the finished runs under `path`."""
    values = {}
    for run in runs:
        key = (run["config"].get("seed"), run["config"].get("fold", 0))
        if key in values:
            raise UserError(f"{path} holds two runs of seed {key[0]}, fold {key[1]} ({run['folder']}); a group "
                            "holds one run a seed and fold")
        _, row = summarize.chosen_row(run, split, select, final)
        values[key] = {name: float(value) for name, value in row.items() if name not in ("epoch", "split", "protocol",
                                                                                           "best_for") and value}
    return values


def shared_run(runs_a, runs_b):
    """A run that both groups hold, in words: the same folder, or copies of one run (copy_key); None
    when they share none."""
    folders = {os.path.realpath(run["folder"]) for run in runs_b}
    copies = {copy_key(run): run["folder"] for run in runs_b}
    for run in runs_a:
        if os.path.realpath(run["folder"]) in folders:
            return f"{run['folder']} is in both"
        if copy_key(run) in copies:
            return (f"{run['folder']} (A) and {copies[copy_key(run)]} (B) are copies of one run (the same settings, "
                    "seed and first epoch's metrics)")
    return None


def copy_key(run):
    """What a run and its copies share: the settings and seed (summarize.identity) and the metrics of
    the first trained epoch. studies.summarize takes runs of the same settings and seed as one; here
    they may be two, of two versions of the code or of a nondeterministic device, which differ there."""
    first = min((int(row["epoch"]) for row in run["rows"] if is_candidate(row["epoch"])), default=0)
    metrics = [{name: value for name, value in row.items() if name != "best_for"} for row in run["rows"]
               if int(row["epoch"]) == first]
    return summarize.identity(run), json.dumps(metrics, sort_keys=True)


def selection(runs, split, select, final):
    """How the runs chose the epoch compared, in words."""
    if final:
        return "its last epoch"
    splits = list(dict.fromkeys(run["selection_split"] for run in runs))
    chosen = ", ".join(dict.fromkeys(select or run["config"]["storage_metrics"][0] for run in runs))
    words = f"the epoch of best {chosen} on the {', '.join(splits)} split"
    return words + (", the split compared: chosen on what it is measured on, which favours it" if split in splits
                    else "")


def differing_settings(runs_a, runs_b):
    """{setting: (its values in A, in B)} of the settings (seeds and operational ones aside) whose values
    differ between the groups, each side in words."""
    keys = sorted(set().union(*(run["config"] for run in [*runs_a, *runs_b])) - summarize.NOT_GROUPING)

    def values(runs, key):
        return {summarize._hashable(run["config"].get(key)): run["config"].get(key) for run in runs}

    return {key: tuple(", ".join(summarize._cell(value) for value in values(runs, key).values())
                       for runs in (runs_a, runs_b))
            for key in keys if set(values(runs_a, key)) != set(values(runs_b, key))}


def difference(a, b, paired, confidence=0.95, resamples=10000, seed=0):
    """{"difference", "low", "high", "p", "test", "note"} of B - A: paired (equal-length, matched arrays)
    or independent samples. Without spread to test (every difference, or every value of each group,
    the same to within TOLERANCE) the interval is the difference itself, p is nan and the note says why."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if paired:
        differences = b - a
        estimate = float(differences.mean())
        if np.ptp(differences) <= TOLERANCE:
            return without_spread(estimate, "paired t", f"every pair differs by {estimate:+.4f}"
                                  if abs(estimate) > TOLERANCE else "B equals A in every pair")
        interval = stats.bootstrap((differences,), np.mean, confidence_level=confidence, n_resamples=resamples,
                                   random_state=np.random.default_rng(seed)).confidence_interval
        return {"difference": estimate, "low": float(interval.low), "high": float(interval.high),
                "p": float(stats.ttest_rel(b, a).pvalue), "test": "paired t", "note": ""}

    def mean_difference(second, first, axis):
        return np.mean(second, axis=axis) - np.mean(first, axis=axis)

    estimate = float(b.mean() - a.mean())
    if np.ptp(a) <= TOLERANCE and np.ptp(b) <= TOLERANCE:
        second = "the same" if abs(estimate) <= TOLERANCE else f"{b.mean():.4f}"
        return without_spread(estimate, "Welch t", f"every run of A gives {a.mean():.4f} and every run of B {second}")
    interval = stats.bootstrap((b, a), mean_difference, confidence_level=confidence, n_resamples=resamples,
                               random_state=np.random.default_rng(seed)).confidence_interval
    return {"difference": estimate, "low": float(interval.low), "high": float(interval.high),
            "p": float(stats.ttest_ind(b, a, equal_var=False).pvalue), "test": "Welch t", "note": ""}


def without_spread(estimate, test, alike):
    """The row of a difference without spread: every resample gives it, and a t statistic divides by 0."""
    return {"difference": estimate, "low": estimate, "high": estimate, "p": math.nan, "test": test,
            "note": f"{alike} (to within {TOLERANCE:g}): no spread, so the interval is that one value and no "
                    "test can weigh it against noise (no p-value)"}


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
    axes.set_yticks(positions, [f"{row['metric']}  (p {format_p(row['p'])})" for row in rows])
    axes.set_xlabel(f"{names[1]} - {names[0]}: difference with its {confidence:.0%} confidence interval")
    axes.set_title(f"{names[1]} against {names[0]} ({rows[0]['test']}, n = {sample_size(rows[0])})")
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
                             "<A>_vs_<B>, each group named by its folder, a study's final/ by the study's)")
    parser.add_argument("--overwrite", action="store_true", help="replace the comparison DIR holds")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    return parser


def run(opt):
    if opt.final and opt.select:
        raise UserError("--final takes the last epoch, --select a best one; drop one of them")
    if not 0 < opt.confidence < 1 or opt.resamples < 100:
        raise UserError("--confidence must lie in (0, 1) and --resamples be at least 100")
    names = group_names(opt.a, opt.b)
    folder = opt.out or os.path.join("Training_Results", "comparisons", f"{names[0]}_vs_{names[1]}")
    written = [os.path.join(folder, name) for name in ("comparison.csv", "comparison.png")]
    earlier = [path for path in written if os.path.exists(path)]
    if earlier and not opt.overwrite:
        raise UserError(f"{folder} holds a comparison already ({os.path.basename(earlier[0])}); pass --overwrite to "
                        "replace it, or --out another folder")
    runs_a, runs_b = finished_runs(opt.a), finished_runs(opt.b)
    shared = shared_run(runs_a, runs_b)
    if shared is not None:
        raise UserError(f"A and B share a run: {shared}; compare groups of different runs (both tests take the "
                        "groups as independent samples)")
    a, b = (group(runs, path, opt.split, opt.select, opt.final) for runs, path in ((runs_a, opt.a), (runs_b, opt.b)))
    rows = compare(a, b, opt.metrics, opt.confidence, opt.resamples, opt.seed)
    print(f"B = {opt.b} against A = {opt.a}, {opt.split} split, {rows[0]['test']} over n = {sample_size(rows[0])}; "
          f"B - A with its {opt.confidence:.0%} bootstrap confidence interval")
    for name, runs in (("A", runs_a), ("B", runs_b)):
        print(f"{name}: each run at {selection(runs, opt.split, opt.select, opt.final)}")
    settings = "; ".join(f"{key} {first} | {second}" for key, (first, second) in differing_settings(runs_a,
                                                                                                     runs_b).items())
    print(f"settings that differ (A | B): {settings or 'none, seeds aside'}")
    few = intervals.too_few(min(rows[0]["runs_a"], rows[0]["runs_b"]), "bootstrap", sample_size(rows[0]))
    if few:
        print(f"note: {few}")
    print(f"| metric | A | B | B - A | {opt.confidence:.0%} CI, n = {sample_size(rows[0])} | p |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['metric']} | {row['mean_a']:.4f} | {row['mean_b']:.4f} | {row['difference']:+.4f} | "
              f"[{row['low']:+.4f}, {row['high']:+.4f}] | {format_p(row['p'])} |")
    for row in rows:
        if row["note"]:
            print(f"note: {row['metric']}: {row['note']}")
    write(rows, folder, names, opt.confidence)
    print(("replaced" if earlier else "written") + f": {', '.join(written)}")
    return rows


def group_names(*paths):
    """A short name for each group: its folder's (a study's final/ folder by the study's), with as
    many folders above it as tell the groups apart."""
    parts = [os.path.abspath(path).strip(os.sep).split(os.sep) for path in paths]
    parts = [folders[:-1] if folders[-1] == "final" and len(folders) > 1 else folders for folders in parts]
    depth = 1
    while depth < max(map(len, parts)) and len({tuple(folders[-depth:]) for folders in parts}) < len(parts):
        depth += 1
    return ["-".join(folders[-depth:]) for folders in parts]


def sample_size(row):
    """The runs a comparison's interval rests on, in words."""
    if row["test"] == "paired t":
        return counted(row["runs_a"], "pair", "pairs")
    return f"{row['runs_a']} and {counted(row['runs_b'], 'run', 'runs')}"


def format_p(p):
    return "-" if math.isnan(p) else f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"


def main(argv=None):
    run_command(run, build_parser().parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
