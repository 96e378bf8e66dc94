"""python -m studies.compare: its intervals and p-values are scipy's on the same numbers, a planted
difference is found, two groups drawn alike are not told apart; groups that share a run are refused,
each group's selection and the settings that differ are named, a difference without spread is said
in words, and a comparison is never replaced without --overwrite (issue 31, items 4, 5, 13)."""
import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import parameters
import training
from studies import compare
from tests import program

REPO = Path(__file__).parent.parent.parent


def write_group(root, values, seeds, fold=0, flags=(), selection_split="val"):
    """Finished run folders under `root`, one a seed, with the test mAP@R and e_recall@1 of `values`
    (main.py `flags` added to their settings)."""
    for seed, (map_at_r, recall) in zip(seeds, values):
        folder = root / f"s{seed}_f{fold}"
        folder.mkdir(parents=True)
        settings = parameters.parse(["--dataset", "digits", "--seed", str(seed), "--folds", "2", "--fold", str(fold),
                                     "--storage_metrics", "mAP@R", "--evaluation_metrics", "mAP@R", "e_recall@1",
                                     *flags], warn=False)
        (folder / "config.json").write_text(json.dumps(training.to_record(settings)))
        with open(folder / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["epoch", "split", "protocol", "mAP@R", "e_recall@1", "best_for"])
            writer.writeheader()
            for split in ("val", "test"):
                writer.writerow({"epoch": 1, "split": split, "protocol": "self", "mAP@R": map_at_r,
                                 "e_recall@1": recall, "best_for": ""})
        (folder / "summary.json").write_text(json.dumps({"selection_split": selection_split}))
    return root


def test_paired_groups_give_scipys_interval_and_p(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a = rng.uniform(0.3, 0.4, size=(5, 2))
    b = a + rng.normal(0.02, 0.01, size=(5, 2))
    write_group(tmp_path / "A", a, range(5))
    write_group(tmp_path / "B", b, range(5))
    rows = {row["metric"]: row for row in compare.run(compare.build_parser().parse_args(
        [str(tmp_path / "A"), str(tmp_path / "B"), "--out", str(tmp_path / "out"), "--resamples", "2000"]))}
    differences = b[:, 0] - a[:, 0]
    interval = stats.bootstrap((differences,), np.mean, n_resamples=2000,
                               random_state=np.random.default_rng(0)).confidence_interval
    row = rows["mAP@R"]
    assert row["test"] == "paired t" and row["difference"] == pytest.approx(differences.mean())
    assert (row["low"], row["high"]) == pytest.approx((interval.low, interval.high))
    assert row["p"] == pytest.approx(stats.ttest_rel(b[:, 0], a[:, 0]).pvalue)
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 0
    with open(tmp_path / "out" / "comparison.csv") as handle:
        assert [line["metric"] for line in csv.DictReader(handle)] == ["mAP@R", "e_recall@1"]
    assert "| mAP@R |" in capsys.readouterr().out


def test_groups_of_other_seeds_are_compared_with_welchs_test():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.5, 0.02, size=6), rng.normal(0.52, 0.04, size=8)
    result = compare.difference(a, b, paired=False, resamples=2000)

    def mean_difference(second, first, axis):
        return np.mean(second, axis=axis) - np.mean(first, axis=axis)

    interval = stats.bootstrap((b, a), mean_difference, n_resamples=2000,
                               random_state=np.random.default_rng(0)).confidence_interval
    assert result["test"] == "Welch t" and result["difference"] == pytest.approx(b.mean() - a.mean())
    assert (result["low"], result["high"]) == pytest.approx((interval.low, interval.high))
    assert result["p"] == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)


def test_a_planted_difference_is_found_and_groups_drawn_alike_are_not():
    rng = np.random.default_rng(2)
    found = 0
    alike_rejected = 0
    for _ in range(20):
        a = rng.normal(0.60, 0.01, size=5)
        planted = compare.difference(a, a + 0.02 + rng.normal(0, 0.005, size=5), paired=True, resamples=1000)
        found += planted["low"] > 0 and planted["p"] < 0.05
        alike = compare.difference(rng.normal(0.6, 0.01, size=5), rng.normal(0.6, 0.01, size=5), paired=False,
                                   resamples=1000)
        alike_rejected += alike["p"] < 0.05
    assert found == 20 and alike_rejected <= 3  # about 1 in 20 by chance


def test_mistakes_are_one_line(tmp_path, capsys):
    write_group(tmp_path / "A", [(0.31, 0.5)], [0])
    write_group(tmp_path / "B", [(0.3, 0.5), (0.4, 0.6)], [0, 1])
    write_group(tmp_path / "C", [(0.35, 0.5), (0.45, 0.6)], [0, 1])
    for argv, fragment in (([str(tmp_path / "A"), str(tmp_path / "B")], "at least 2 runs a group"),
                           ([str(tmp_path / "C"), str(tmp_path / "B"), "--metrics", "nmi"], "choose --metrics"),
                           ([str(tmp_path / "none"), str(tmp_path / "B")], "no run folder")):
        with pytest.raises(SystemExit) as exit_info:
            compare.main(argv + ["--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and fragment in err, err


def test_groups_that_share_a_run_are_refused_in_one_line(tmp_path, capsys):
    """The same folder in both groups, or a copy of one run (the same settings, seed and first epoch),
    is refused: Welch's and the paired test take the groups' runs as distinct."""
    rng = np.random.default_rng(3)
    write_group(tmp_path / "all" / "A", rng.uniform(0.3, 0.4, size=(4, 2)), range(4))
    write_group(tmp_path / "all" / "B", rng.uniform(0.3, 0.4, size=(4, 2)), range(4), flags=["--lr", "1e-4"])
    shutil.copytree(tmp_path / "all" / "A" / "s0_f0", tmp_path / "C" / "copy_of_s0")  # a copied run, renamed
    write_group(tmp_path / "C", rng.uniform(0.3, 0.4, size=(3, 2)), range(1, 4), flags=["--lr", "1e-3"])
    (tmp_path / "alias").symlink_to(tmp_path / "all" / "A")
    copy = tmp_path / "C" / "copy_of_s0"
    for a, b, fragment in (("all/A", "C", f"all/A/s0_f0 (A) and {copy} (B) are copies of one run"),
                           ("all/A", "alias", "all/A/s0_f0 is in both"),
                           ("all", "all/B", "all/B/s0_f0 is in both")):
        status, out, err = program.run_command(compare.main, [tmp_path / a, tmp_path / b, "--out", tmp_path / "out"],
                                               capsys)
        program.assert_one_line_error(status, err, "A and B share a run", fragment)
        assert not (tmp_path / "out").exists()


def test_runs_of_the_same_settings_and_seed_that_differ_are_not_copies(tmp_path, capsys):
    """Two versions of the code (or a nondeterministic device) give other metrics to the same settings
    and seed: a comparison of them is allowed, and it says that no setting differs."""
    rng = np.random.default_rng(4)
    write_group(tmp_path / "old", rng.uniform(0.3, 0.4, size=(3, 2)), range(3))
    write_group(tmp_path / "new", rng.uniform(0.4, 0.5, size=(3, 2)), range(3))
    status, out, err = program.run_command(compare.main, [tmp_path / "old", tmp_path / "new", "--out",
                                                          tmp_path / "out"], capsys)
    assert status == 0 and "paired t over n = 3 pairs" in out and "settings that differ (A | B): none, seeds aside" \
        in out, out + err


def test_each_groups_selection_and_the_settings_that_differ_are_named(tmp_path, capsys):
    rng = np.random.default_rng(5)
    write_group(tmp_path / "folds", rng.uniform(0.3, 0.4, size=(3, 2)), range(3))
    write_group(tmp_path / "on_test", rng.uniform(0.3, 0.4, size=(3, 2)), range(3), flags=["--lr", "0.001"],
                selection_split="test")
    status, out, err = program.run_command(compare.main, [tmp_path / "folds", tmp_path / "on_test", "--out",
                                                          tmp_path / "out"], capsys)
    assert status == 0, err
    assert "A: each run at the epoch of best mAP@R on the val split\n" in out
    assert ("B: each run at the epoch of best mAP@R on the test split, the split compared: chosen on what it is "
            "measured on, which favours it\n") in out
    default_lr = parameters.parse(["--dataset", "digits"], warn=False).optimisation.lr
    assert f"settings that differ (A | B): lr {default_lr} | 0.001\n" in out


def test_a_constant_difference_is_said_in_words_not_tested(tmp_path, capsys):
    """Paired [0.5, 0.6, 0.7] against [0.6, 0.7, 0.8] differ by +0.1 up to rounding: no p-value of
    rounding noise (1e-31 before), the interval is the one value; equal constant independent groups
    say why there is no p-value instead of printing nan."""
    paired = compare.difference([0.5, 0.6, 0.7], [0.6, 0.7, 0.8], paired=True, resamples=1000)
    assert (paired["low"], paired["high"]) == pytest.approx((0.1, 0.1)) and np.isnan(paired["p"])
    assert paired["note"].startswith("every pair differs by +0.1000 (to within 1e-09): no spread")
    alike = compare.difference([0.5] * 3, [0.5] * 4, paired=False, resamples=1000)
    assert alike["difference"] == 0 and np.isnan(alike["p"])
    assert alike["note"].startswith("every run of A gives 0.5000 and every run of B the same (to within 1e-09)")
    # a real spread, however small, is tested as before
    spread = compare.difference([0.5, 0.6, 0.7], [0.6, 0.7001, 0.8], paired=True, resamples=1000)
    assert spread["p"] == pytest.approx(stats.ttest_rel([0.6, 0.7001, 0.8], [0.5, 0.6, 0.7]).pvalue)
    write_group(tmp_path / "A", [(0.5, 0.9), (0.6, 0.9), (0.7, 0.9)], range(3))
    write_group(tmp_path / "B", [(0.6, 0.9), (0.7, 0.9), (0.8, 0.9)], range(3), flags=["--lr", "1e-3"])
    write_group(tmp_path / "C", [(0.6, 0.9), (0.7, 0.9), (0.8, 0.9)], range(5, 8), flags=["--lr", "1e-2"])
    status, out, err = program.run_command(compare.main, [tmp_path / "A", tmp_path / "B", "--out", tmp_path / "AB"],
                                           capsys)
    assert "| mAP@R | 0.6000 | 0.7000 | +0.1000 | [+0.1000, +0.1000] | - |" in out
    assert "note: mAP@R: every pair differs by +0.1000 (to within 1e-09)" in out
    assert "note: e_recall@1: B equals A in every pair (to within 1e-09)" in out
    status, out, err = program.run_command(compare.main, [tmp_path / "A", tmp_path / "C", "--out", tmp_path / "AC"],
                                           capsys)
    assert "Welch t" in out and "nan" not in out
    assert "note: e_recall@1: every run of A gives 0.9000 and every run of B the same (to within 1e-09)" in out


def test_few_runs_are_said_beside_the_interval(tmp_path, capsys):
    rng = np.random.default_rng(6)
    write_group(tmp_path / "A", rng.uniform(0.3, 0.4, size=(4, 2)), range(4))
    write_group(tmp_path / "B", rng.uniform(0.3, 0.4, size=(6, 2)), range(10, 16), flags=["--lr", "1e-3"])
    status, out, err = program.run_command(compare.main, [tmp_path / "A", tmp_path / "B", "--out", tmp_path / "out"],
                                           capsys)
    assert "| 95% CI, n = 4 and 6 runs | p |" in out
    assert "note: n = 4 and 6 runs: too few for a bootstrap interval to mean much" in out


def test_the_default_folder_is_named_after_the_studies_and_a_comparison_is_replaced_only_when_asked(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(7)
    for study, lr in (("first", "1e-3"), ("second", "1e-2")):
        write_group(tmp_path / "studies" / study / "final", rng.uniform(0.3, 0.4, size=(3, 2)), range(3),
                    flags=["--lr", lr])
    argv = ["studies/first/final", "studies/second/final", "--resamples", "500"]
    status, out, err = program.run_command(compare.main, argv, capsys)
    folder = Path("Training_Results/comparisons/first_vs_second")
    assert status == 0 and f"written: {folder / 'comparison.csv'}" in out, err
    before = (folder / "comparison.csv").read_text()
    status, out, err = program.run_command(compare.main, argv + ["--seed", "1"], capsys)
    program.assert_one_line_error(status, err, f"{folder} holds a comparison already", "--overwrite")
    assert (folder / "comparison.csv").read_text() == before
    status, out, err = program.run_command(compare.main, argv + ["--seed", "1", "--overwrite"], capsys)
    assert status == 0 and f"replaced: {folder / 'comparison.csv'}" in out
    assert (folder / "comparison.csv").read_text() != before
    assert compare.group_names("x/digits/final", "y/digits/final") == ["x-digits", "y-digits"]
    assert compare.group_names("runs/a", "runs/b/final") == ["a", "b"]


def test_the_comparison_docs_tuning_shows_runs_and_writes_where_it_says(tmp_path, capsys, monkeypatch):
    page = (REPO / "docs" / "tuning.md").read_text()
    commands = [line.split() for block in re.findall(r"```bash\n(.*?)```", page, flags=re.S)
                for line in block.splitlines() if line.startswith("python -m studies.compare ")]
    assert commands
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(8)
    for command in commands:
        for index, path in enumerate(command[3:5]):
            write_group(tmp_path / path, rng.uniform(0.3, 0.4, size=(5, 2)), range(5),
                        flags=["--lr", f"1e-{index + 3}"])
        status, out, err = program.run_command(compare.main, command[3:], capsys)
        assert status == 0, err
        folder = re.search(r"written: (\S+)/comparison.csv", out).group(1)
        assert f"`{folder}/`" in page  # where the page says it writes


def test_a_rerun_of_the_digits_study_replaces_its_comparisons(tmp_path):
    """Sample_Runs/digits_study.sh continues its studies when run again, then compares them again."""
    recorder = tmp_path / "record.sh"
    log = tmp_path / "commands"
    recorder.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" >> {log}\nprintf "\\n" >> {log}\n')
    recorder.chmod(0o755)
    subprocess.run(["bash", "Sample_Runs/digits_study.sh", str(tmp_path / "study")], cwd=REPO, check=True,
                   env={**os.environ, "python": str(recorder)})
    commands = [line.rstrip("\0").split("\0") for line in log.read_text().splitlines()]
    comparisons = [compare.build_parser().parse_args(command[2:]) for command in commands
                   if command[:2] == ["-m", "studies.compare"]]
    assert len(comparisons) == 2 and all(options.overwrite for options in comparisons)
