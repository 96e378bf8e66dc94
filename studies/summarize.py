"""A table of finished runs: chosen metrics as mean ± std over the seeds of each group of runs.

    python -m studies.summarize RUNS... [--metrics e_recall@1 nmi] [--split test]
                                          [--select METRIC | --final] [--format markdown|csv]

RUNS are run folders written by main.py, or folders holding them at any depth (e.g.
Training_Results/). Runs whose config.json files differ only in --seed and in flags that do
not change the computation (training.OPERATIONAL) form one group, one row of the table;
the columns name the flags in which the groups differ. Each run contributes the metrics of
`--split` at one epoch: the trained epoch (1 or later) with the best `--select` metric (default:
the run's first --storage_metrics) on the split that run selected its checkpoints on (val with
--use_tv_split, else test), or with --final its last epoch. The table says which split selected the epochs.
Runs without summary.json (not finished) are left out, and named on stderr; so are runs without
the --select metric on their selection split. Runs of the same settings and seed (a run folder
copied and the copy resumed) count once. The list files of --dataset list define its data: runs
on other lists are other groups (config.json records them as absolute paths).
"""
import csv
import io
import json
import math
import os
import sys

import numpy as np

import training
from errors import CommandParser, SettingError, UserError, run_command
from evaluation.selection import best_row, is_candidate

# Settings that tell runs of one group apart without making them different experiments.
NOT_GROUPING = training.OPERATIONAL | {"seed"}


def find_runs(paths):
    """The run folders (holding config.json) among `paths` and below them, sorted."""
    runs = []
    for path in paths:
        if os.path.isfile(os.path.join(path, "config.json")):
            runs.append(path)
            continue
        if not os.path.isdir(path):
            raise UserError(f"no run folder at {path}; give run folders written by main.py or a folder holding them")
        found = []
        for root, folders, files in os.walk(path):
            if "config.json" in files:
                found.append(root)
                folders.clear()  # a run folder holds no further runs
            folders.sort()
        if not found:
            raise UserError(f"{path} holds no run folder (no config.json in it or below); give run folders "
                            "written by main.py or a folder holding them")
        runs += found
    return sorted(dict.fromkeys(os.path.normpath(run) for run in runs))


def load_run(folder):
    """{"folder", "config", "selection_split", "rows"}, or None when the run has not finished (or a
    callback stopped it before its last epoch). The config is the run's record as this version
    reads it, so runs of earlier versions group with today's."""
    if not os.path.exists(os.path.join(folder, "summary.json")):
        return None
    try:
        with open(os.path.join(folder, "config.json")) as handle:
            config = training.to_record(training.from_record(json.load(handle)))
        with open(os.path.join(folder, "summary.json")) as handle:
            summary = json.load(handle)
        with open(os.path.join(folder, "metrics.csv"), newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, json.JSONDecodeError, SettingError) as error:
        raise UserError(f"cannot read the run in {folder} ({error}); leave it out of RUNS") from None
    if "stopped_after" in summary:
        return None
    return {"folder": folder, "config": config, "selection_split": summary["selection_split"], "rows": rows}


def selection_problem(run, select, final):
    """Why no epoch of `run` can be selected by `select` (as chosen_row selects), or None."""
    rows = run["rows"]
    if not rows:
        return f"{run['folder']}/metrics.csv has no rows"
    if final:
        return None
    select = select or run["config"]["storage_metrics"][0]
    split = run["selection_split"]
    if select in rows[0] and best_row([row for row in rows if row[select] not in ("", None)], split, select):
        return None
    problem = f"{run['folder']}/metrics.csv has no {select} on the {split} split"
    candidates = [row for row in rows if row["split"] == split and is_candidate(row["epoch"])]
    held = [name for name in _metric_columns(rows) if any(row[name] not in ("", None) for row in candidates)]
    if held:
        return f"{problem}; choose --select among {', '.join(held)}"
    splits = ", ".join(dict.fromkeys(row["split"] for row in rows))
    return f"{problem} (its rows are of the splits {splits}); choose runs evaluated on the {split} split"


def chosen_row(run, split, select, final):
    """(selected epoch, the row of `split` at it): the last epoch, or the first epoch with the
    largest `select` value (the run's first storage metric when None) on the selection split."""
    rows = run["rows"]
    problem = selection_problem(run, select, final)
    if problem is not None:
        raise UserError(problem)
    if final:
        epoch = max(int(row["epoch"]) for row in rows)
    else:
        select = select or run["config"]["storage_metrics"][0]
        epoch = int(best_row([row for row in rows if row[select] not in ("", None)], run["selection_split"],
                             select)["epoch"])
    at_epoch = [row for row in rows if int(row["epoch"]) == epoch and row["split"] == split]
    if not at_epoch:
        splits = sorted({row["split"] for row in rows})
        raise UserError(f"{run['folder']}/metrics.csv has no {split} split at epoch {epoch}; choose --split among "
                        f"{', '.join(splits)}")
    return epoch, at_epoch[0]


def _metric_columns(rows):
    return [name for name in rows[0] if name not in ("epoch", "split", "protocol", "best_for")] if rows else []


def distinct(runs):
    """(the runs, each once; {kept folder: [its copies]}): runs of the same settings and seed are
    one computation (a run folder copied, and the copy resumed), counted once: the first folder."""
    kept, copies = {}, {}
    for run in runs:
        key = identity(run)
        if key in kept:
            copies.setdefault(kept[key]["folder"], []).append(run["folder"])
        else:
            kept[key] = run
    return list(kept.values()), copies


def identity(run):
    """What makes a run one computation: its settings and seed, all but the operational ones. A run
    folder copied, and the copy resumed, has the identity of the run it copies."""
    return _hashable({key: value for key, value in run["config"].items() if key not in training.OPERATIONAL})


def usable(runs, select=None, final=False):
    """(the distinct runs an epoch can be selected in, warning lines about the others)."""
    runs, copies = distinct(runs)
    warnings = [f"counted once: {', '.join(others)} hold the settings and seed of {folder} (copies of one run)"
                for folder, others in copies.items()]
    problems = {run["folder"]: selection_problem(run, select, final) for run in runs}
    kept = [run for run in runs if problems[run["folder"]] is None]
    if not kept:
        raise UserError(next(iter(problems.values())))
    warnings += [f"left out: {problem.split('; ')[0]}" for problem in problems.values() if problem is not None]
    return kept, warnings


def summarize(runs, metrics=None, split="test", select=None, final=False):
    """(group flags, table rows): one row per group of runs, in the order of their first run.

    Copies of a run count once, and runs without the `select` metric on their selection split
    are left out, each with a warning line on stderr (`usable`). Each row holds the group's
    values of the differing flags, "runs", "seeds", "selected_on" (the split, or "final epoch"),
    "epochs" (the selected epoch of each run), and for each metric "<metric>" = (mean, sample
    std over the runs or nan for one run)."""
    runs, warnings = usable(runs, select, final)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    metrics = metrics or [name for name in runs[0]["config"]["evaluation_metrics"]
                          if all(name in _metric_columns(run["rows"]) for run in runs)]
    keys = sorted(set().union(*(run["config"] for run in runs)) - NOT_GROUPING)
    differing = [key for key in keys if len({_hashable(run["config"].get(key)) for run in runs}) > 1]
    groups = {}
    for run in runs:
        groups.setdefault(tuple(_hashable(run["config"].get(key)) for key in differing), []).append(run)
    table = []
    for members in groups.values():
        chosen = [chosen_row(run, split, select, final) for run in members]
        row = {key: members[0]["config"].get(key) for key in differing}
        row["runs"] = len(members)
        row["seeds"] = [run["config"]["seed"] for run in members]
        row["selected_on"] = ("final epoch" if final else
                              ", ".join(dict.fromkeys(run["selection_split"] for run in members)))
        row["select"] = None if final else ", ".join(dict.fromkeys(select or run["config"]["storage_metrics"][0]
                                                                   for run in members))
        row["epochs"] = [epoch for epoch, _ in chosen]
        for name in metrics:
            missing = [run["folder"] for run, (_, values) in zip(members, chosen) if name not in values]
            if missing:
                raise UserError(f"{missing[0]}/metrics.csv has no {name}; choose --metrics among "
                                f"{', '.join(_metric_columns(members[0]['rows']))}")
            values = np.array([float(values[name]) for _, values in chosen])
            row[name] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan)
        table.append(row)
    return differing, metrics, table


def _hashable(value):
    return json.dumps(value, sort_keys=True)


def _cell(value):
    if isinstance(value, list):
        return " ".join(str(item) for item in value)
    return "-" if value is None else str(value)


def _statistic(mean, std):
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def markdown(differing, metrics, table, split):
    header = [*differing, "runs", "seeds", "selected on", "epochs", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        selected = row["selected_on"] if row["select"] is None else f"{row['selected_on']} (best {row['select']})"
        cells = [*(_cell(row[key]) for key in differing), str(row["runs"]), _cell(row["seeds"]), selected,
                 _cell(row["epochs"]), *(_statistic(*row[name]) for name in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{split} split; mean ± sample std over the runs of a row, each at its selected epoch.")
    return "\n".join(lines)


def csv_table(differing, metrics, table):
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow([*differing, "runs", "seeds", "selected_on", "select", "epochs",
                     *(f"{name}_{statistic}" for name in metrics for statistic in ("mean", "std"))])
    for row in table:
        writer.writerow([*(_cell(row[key]) for key in differing), row["runs"], _cell(row["seeds"]), row["selected_on"],
                         _cell(row["select"]), _cell(row["epochs"]),
                         *(f"{value:.6f}" if not math.isnan(value) else "" for name in metrics for value in row[name])])
    return output.getvalue().rstrip("\n")


def build_parser():
    parser = CommandParser(command="python -m studies.summarize", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUNS", help="run folders, or folders holding them")
    parser.add_argument("--metrics", nargs="+", default=None,
                        help="metrics columns of metrics.csv (default: the runs' --evaluation_metrics)")
    parser.add_argument("--split", default="test", help="the split whose metrics are reported (default: test)")
    parser.add_argument("--select", default=None,
                        help="metric whose best epoch on the selection split is reported "
                             "(default: each run's first --storage_metrics)")
    parser.add_argument("--final", action="store_true", help="report the last epoch instead of the best")
    parser.add_argument("--format", default="markdown", choices=["markdown", "csv"],
                        help="a markdown table (default) or CSV with <metric>_mean and <metric>_std columns")
    return parser


def run(opt):
    if opt.final and opt.select:
        raise UserError("--final reports the last epoch, --select a best one; drop one of them")
    loaded = [(folder, load_run(folder)) for folder in find_runs(opt.runs)]
    unfinished = [folder for folder, content in loaded if content is None]
    runs = [content for _, content in loaded if content is not None]
    if not runs:
        raise UserError(f"none of the runs has finished (no summary.json in {', '.join(unfinished)}); "
                        "summarise finished runs")
    differing, metrics, table = summarize(runs, opt.metrics, opt.split, opt.select, opt.final)
    print(markdown(differing, metrics, table, opt.split) if opt.format == "markdown"
          else csv_table(differing, metrics, table))
    if unfinished:
        print(f"left out {len(unfinished)} unfinished run(s) (no summary.json, or stopped before their last "
              f"epoch): {', '.join(unfinished)}",
              file=sys.stderr)


def main(argv=None):
    run_command(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
