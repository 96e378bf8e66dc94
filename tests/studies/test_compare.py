"""python -m studies.compare: its intervals and p-values are scipy's on the same numbers, a planted
difference is found, two groups drawn alike are not told apart."""
import csv
import json

import numpy as np
import pytest
from scipy import stats

import parameters
import training
from studies import compare


def write_group(root, values, seeds, fold=0):
    """Finished run folders under `root`, one a seed, with the test mAP@R and e_recall@1 of `values`."""
    for seed, (map_at_r, recall) in zip(seeds, values):
        folder = root / f"s{seed}_f{fold}"
        folder.mkdir(parents=True)
        settings = parameters.parse(["--dataset", "digits", "--seed", str(seed), "--folds", "2", "--fold", str(fold),
                                     "--storage_metrics", "mAP@R", "--evaluation_metrics", "mAP@R", "e_recall@1"],
                                    warn=False)
        (folder / "config.json").write_text(json.dumps(training.to_record(settings)))
        with open(folder / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["epoch", "split", "protocol", "mAP@R", "e_recall@1", "best_for"])
            writer.writeheader()
            for split in ("val", "test"):
                writer.writerow({"epoch": 1, "split": split, "protocol": "self", "mAP@R": map_at_r,
                                 "e_recall@1": recall, "best_for": ""})
        (folder / "summary.json").write_text(json.dumps({"selection_split": "val"}))
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
    write_group(tmp_path / "A", [(0.3, 0.5)], [0])
    write_group(tmp_path / "B", [(0.3, 0.5), (0.4, 0.6)], [0, 1])
    for argv, fragment in (([str(tmp_path / "A"), str(tmp_path / "B")], "at least 2 runs a group"),
                           ([str(tmp_path / "B"), str(tmp_path / "B"), "--metrics", "nmi"], "choose --metrics"),
                           ([str(tmp_path / "none"), str(tmp_path / "B")], "no run folder")):
        with pytest.raises(SystemExit) as exit_info:
            compare.main(argv + ["--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and fragment in err, err
