"""python -m studies.summarize on run folders written here with known metrics."""
import csv
import io
import json
import statistics

import pytest

import parameters
import training
from studies import summarize

METRICS = ["e_recall@1", "nmi"]
# (group, seed): {split: [(e_recall@1, nmi) per epoch 0, 1, 2]}; baseline runs select on val, PSD runs on test.
RUNS = {
    ("baseline", 0): {"val": [(0.5, 0.1), (0.7, 0.2), (0.6, 0.3)], "test": [(0.40, 0.30), (0.61, 0.32), (0.55, 0.35)]},
    ("baseline", 1): {"val": [(0.5, 0.1), (0.7, 0.4), (0.7, 0.2)], "test": [(0.41, 0.31), (0.63, 0.36), (0.66, 0.37)]},
    ("baseline", 2): {"val": [(0.5, 0.5), (0.6, 0.2), (0.8, 0.3)], "test": [(0.42, 0.29), (0.52, 0.33), (0.70, 0.38)]},
    ("psd", 0): {"test": [(0.40, 0.30), (0.75, 0.40), (0.72, 0.45)]},
    ("psd", 1): {"test": [(0.40, 0.30), (0.71, 0.41), (0.77, 0.42)]},
}


def write_run(root, group, seed, splits, finished=True):
    flags = ["--dataset", "digits", "--seed", str(seed), "--savename", f"{group}_s{seed}", "--evaluation_metrics",
             *METRICS, "--save_path", str(root), "--gpu", str(seed), "--kernels", str(seed)]
    if group == "psd":
        flags += ["--PSD", "--kd_lambda", "200"]
    else:
        flags += ["--use_tv_split"]
    folder = root / group / f"s{seed}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(training.to_record(parameters.parse(flags))))
    with open(folder / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["epoch", "split", *METRICS, "best_for"])
        writer.writeheader()
        for epoch in range(3):
            for split, values in splits.items():
                writer.writerow({"epoch": epoch, "split": split, **dict(zip(METRICS, values[epoch])), "best_for": ""})
    if finished:
        (folder / "summary.json").write_text(json.dumps({"selection_split": "val" if "val" in splits else "test"}))
    return folder


@pytest.fixture
def results(tmp_path):
    for (group, seed), splits in RUNS.items():
        write_run(tmp_path, group, seed, splits)
    write_run(tmp_path, "psd", 2, RUNS[("psd", 1)], finished=False)
    return tmp_path


def summarise(argv, capsys):
    summarize.main(argv)
    captured = capsys.readouterr()
    return captured.out, captured.err


def cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def expected(values):
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def test_markdown_table_groups_by_config_and_selects_on_the_run_split(results, capsys):
    out, err = summarise([str(results)], capsys)
    lines = out.splitlines()
    assert cells(lines[0]) == ["PSD", "kd_lambda", "use_tv_split", "runs", "seeds", "selected on", "epochs",
                               "e_recall@1", "nmi"]
    # Baseline: best val e_recall@1 at epochs 1, 1 (a tie with epoch 2: the first), 2; test values there.
    assert cells(lines[2]) == ["False", "75.0", "True", "3", "0 1 2", "val (best e_recall@1)", "1 1 2",
                               expected([0.61, 0.63, 0.70]), expected([0.32, 0.36, 0.38])]
    # PSD: no validation split, selected on test; the unfinished third seed is left out and named.
    assert cells(lines[3]) == ["True", "200.0", "False", "2", "0 1", "test (best e_recall@1)", "1 2",
                               expected([0.75, 0.77]), expected([0.40, 0.42])]
    assert len(lines) == 6 and lines[5].startswith("test split; mean ± sample std")
    assert "left out 1 unfinished run(s)" in err and "s2" in err


def test_select_final_split_and_csv(results, capsys):
    out, _ = summarise([str(results / "baseline"), "--select", "nmi", "--split", "val", "--format", "csv"], capsys)
    (row,) = list(csv.DictReader(io.StringIO(out)))
    # One group: no flag differs; best val nmi at epochs 2, 1, 2: seed 2's best, 0.5 at epoch 0 (the
    # untrained network), is never selected, as main.py never selects it.
    assert (row["runs"], row["seeds"], row["selected_on"], row["select"], row["epochs"]) == \
        ("3", "0 1 2", "val", "nmi", "2 1 2")
    assert float(row["e_recall@1_mean"]) == pytest.approx(statistics.mean([0.6, 0.7, 0.8]), abs=1e-6)
    assert float(row["nmi_std"]) == pytest.approx(statistics.stdev([0.3, 0.4, 0.3]), abs=1e-6)

    out, _ = summarise([str(results / "psd" / "s0"), "--final", "--metrics", "nmi"], capsys)
    lines = out.splitlines()
    assert cells(lines[0]) == ["runs", "seeds", "selected on", "epochs", "nmi"]
    assert cells(lines[2]) == ["1", "0", "final epoch", "2", "0.4500"]


@pytest.mark.parametrize("argv,fragments", [
    (["{root}/nowhere"], ["no run folder at", "nowhere"]),
    (["{root}/empty"], ["holds no run folder", "empty"]),
    (["{root}", "--metrics", "map"], ["has no map", "e_recall@1, nmi"]),
    (["{root}", "--split", "val"], ["has no val split", "psd"]),
    (["{root}", "--select", "nmi", "--final"], ["drop one of them"]),
    (["{root}/psd/s2"], ["none of the runs has finished"]),
])
def test_user_mistakes_are_one_line_errors(results, capsys, argv, fragments):
    (results / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        summarize.main([argument.format(root=results) for argument in argv])
    assert exit_info.value.code == 2
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1 and error_lines[0].startswith("error:")
    assert all(fragment in error_lines[0] for fragment in fragments), error_lines[0]


def test_configs_compare_as_the_parser_reads_them(results, capsys):
    # a config.json written by another version: an integer where the flag is a float, a flag it did not have
    config_path = results / "baseline" / "s1" / "config.json"
    config = json.loads(config_path.read_text())
    config["fc_lr"], config["loss_margin_nu"] = -1, 0
    del config["save_checkpoints"]
    config_path.write_text(json.dumps(config))
    out, _ = summarise([str(results / "baseline"), "--format", "csv"], capsys)
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["runs"] == "3"


def write_list_run(root, name, cwd, monkeypatch, seed=0):
    """A finished run of --dataset list on the lists train.txt / test.txt of the folder `cwd`, named as
    a user in that folder names them."""
    (cwd / "train.txt").parent.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(cwd)
    flags = ["--dataset", "list", "--train_list", "train.txt", "--test_list", "test.txt", "--seed", str(seed),
             "--evaluation_metrics", *METRICS]
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(training.to_record(parameters.parse(flags))))
    write_table(folder, {"test": [(0.4, 0.3), (0.5 + seed / 10 + len(name) / 100, 0.3)]})
    return folder


def write_table(folder, splits, selection_split="test"):
    with open(folder / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["epoch", "split", *METRICS, "best_for"])
        writer.writeheader()
        for split, values in splits.items():
            for epoch, row in enumerate(values):
                writer.writerow({"epoch": epoch, "split": split, **dict(zip(METRICS, row)), "best_for": ""})
    (folder / "summary.json").write_text(json.dumps({"selection_split": selection_split}))


def test_runs_on_other_lists_are_other_rows(tmp_path, capsys, monkeypatch):
    """Issue 26: the lists define the data of --dataset list; lists of the same name in other folders
    were one row."""
    for name in ("birds", "cars"):
        write_list_run(tmp_path / "runs", name, tmp_path / "data" / name, monkeypatch)
    monkeypatch.chdir(tmp_path)
    out, _ = summarise([str(tmp_path / "runs"), "--format", "csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["runs"] for row in rows] == ["1", "1"]
    assert [row["train_list"] for row in rows] == [str(tmp_path / "data" / name / "train.txt")
                                                   for name in ("birds", "cars")]


def test_copies_of_a_run_count_once(results, capsys):
    """Issue 26: a run and its resumed copies (same settings, same seed) were 3 runs, "± 0.0000"."""
    import shutil

    for copy in ("s0_copy", "s0_resumed"):
        shutil.copytree(results / "psd" / "s0", results / "psd" / copy)
    out, err = summarise([str(results / "psd"), "--format", "csv"], capsys)
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert (row["runs"], row["seeds"]) == ("2", "0 1")
    assert float(row["e_recall@1_mean"]) == pytest.approx(statistics.mean([0.75, 0.77]), abs=1e-6)
    assert "counted once" in err and "s0_copy" in err and "s0_resumed" in err


def test_a_run_without_the_selected_metric_is_left_out_with_a_warning(results, capsys):
    """Issue 26: one such run stopped the table, and its message offered the metric it lacked."""
    # a run whose selection split has no rows (In-Shop ranked by --evaluation_protocol self: query, gallery)
    odd = write_run(results, "psd", 3, {"query": [(0.4, 0.3)] * 3, "gallery": [(0.4, 0.3)] * 3})
    (odd / "summary.json").write_text(json.dumps({"selection_split": "test"}))
    out, err = summarise([str(results / "psd"), "--format", "csv"], capsys)
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert (row["runs"], row["seeds"]) == ("2", "0 1")
    (warning,) = [line for line in err.splitlines() if line.startswith("warning:")]
    assert str(odd) in warning and "no e_recall@1 on the test split" in warning
    # every run without it: one error line, offering only what the selection split holds
    with pytest.raises(SystemExit):
        summarise([str(odd)], capsys)
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "no e_recall@1 on the test split" in error
    assert "choose --select among" not in error and "query, gallery" in error
