"""The unseen-class protocol (python -m studies.unseen_classes) on digits with tiny settings."""
import csv
import json
import sys
import types

import numpy as np
import pytest

import evaluation
import parameters
from studies import summarize, unseen_classes

TINY = ["--dataset", "digits", "--arch", "resnet18_frozen_normalize", "--not_pretrained", "--embed_dim", "16",
        "--bs", "30", "--samples_per_class", "10", "--lr", "1e-4", "--kernels", "0", "--n_epochs", "1",
        "--no_reports", "--tv_split_perc", "0.5", "--evaluation_metrics", "precision@1", "e_recall@1"]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def protocol(tmp_path_factory, one_thread):
    save_path = tmp_path_factory.mktemp("unseen")
    unseen_classes.main(TINY + ["--holdout_classes", "2", "--save_path", str(save_path), "--savename", "digits"])
    return save_path / "digits"


def test_per_class_table(protocol):
    rows = read_csv(protocol / "per_class_precision_at_1.csv")
    assert [row["class"] for row in rows] == ["0", "1", "2", "3", "4"]
    assert [row["held_out"] for row in rows] == ["False", "False", "False", "True", "True"]
    for row in rows:
        assert 0 <= float(row["all_classes"]) <= 1 and 0 <= float(row["without_last_2"]) <= 1
        assert float(row["drop"]) == pytest.approx(float(row["all_classes"]) - float(row["without_last_2"]),
                                                   abs=2e-6)
    # Both networks are evaluated on the same images: half of each training class, each querying the
    # training images of all the classes (the study's protocol).
    images = sum(int(row["images"]) for row in rows)
    for name in ("all_classes", "without_last_2"):
        last = [row for row in read_csv(protocol / name / "metrics.csv") if row["split"] == "val"][-1]
        assert last["epoch"] == "1" and last["protocol"] == "train_gallery"
    # The all-class network trained on exactly that gallery: its per-class values, weighted by class
    # size, give its run's own Precision@1 of its last epoch.
    last = [row for row in read_csv(protocol / "all_classes" / "metrics.csv") if row["split"] == "val"][-1]
    weighted = sum(float(row["all_classes"]) * int(row["images"]) for row in rows) / images
    assert weighted == pytest.approx(float(last["precision@1"]), abs=1e-5)


def test_summary_table_and_what_each_network_trained_on(protocol):
    per_class = read_csv(protocol / "per_class_precision_at_1.csv")
    summary = {row["classes"]: row for row in read_csv(protocol / "summary.csv")}
    members = {"held out": per_class[3:], "seen": per_class[:3], "all": per_class}
    for group, rows in members.items():
        assert int(summary[group]["n_classes"]) == len(rows)
        for column in ("all_classes", "without_last_2", "drop"):
            assert float(summary[group][column]) == pytest.approx(np.mean([float(row[column]) for row in rows]),
                                                                  abs=2e-6)
    configs = {name: json.loads((protocol / name / "config.json").read_text())
               for name in ("all_classes", "without_last_2")}
    assert configs["all_classes"]["holdout_classes"] == 0 and configs["without_last_2"]["holdout_classes"] == 2
    assert all(config["use_tv_split"] and config["tv_split_by_samples"] for config in configs.values())


def test_the_summariser_reads_the_protocol_runs(protocol, capsys):
    summarize.main([str(protocol), "--split", "val", "--final", "--metrics", "precision@1"])
    lines = capsys.readouterr().out.splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == \
        ["holdout_classes", "runs", "seeds", "selected on", "epochs", "precision@1"]
    assert lines[2].startswith("| 0 | 1 | 0 | final epoch | 1 |") and lines[3].startswith("| 2 | 1 |")


def test_per_class_precision_at_1_by_hand():
    # Points on a line: 0 and 1 are each other's nearest, 2's nearest is 1 (another class), 3's is 2.
    features = np.array([[0.0], [0.1], [0.5], [1.0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    precision, counts = unseen_classes.per_class_precision_at_1(features, labels, 3)
    assert counts.tolist() == [2, 2, 0]
    assert precision[:2].tolist() == [1.0, 0.5] and np.isnan(precision[2])
    total = evaluation.compute(features, labels, ["precision@1"])["precision@1"]
    assert total == pytest.approx(np.sum(precision[:2] * counts[:2]) / 4)
    # Against a gallery (the training images): 0 -> 0.05 (class 0), 0.1 -> 0.05, 0.5 -> 0.9 (class 1)
    # whatever 0.05's class; 1.0 -> 0.9.
    gallery = (np.array([[0.05], [0.9]], dtype=np.float32), np.array([0, 1]))
    precision, counts = unseen_classes.per_class_precision_at_1(features, labels, 2, gallery)
    assert precision.tolist() == [1.0, 1.0] and counts.tolist() == [2, 2]


def test_tables_go_to_wandb_when_online(monkeypatch, tmp_path):
    logged = {}

    class Table:
        def __init__(self, columns, data):
            self.columns, self.data = columns, data

    class Run:
        def log(self, values):
            logged.update(values)

        def finish(self):
            logged["finished"] = True

    fake = types.SimpleNamespace(Table=Table, init=lambda **options: logged.update(init=options) or Run())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    per_class, summary = unseen_classes.tables(["a", "b", "c"], 1, np.array([2, 2, 2]), np.array([1.0, 0.5, 0.5]),
                                               np.array([1.0, 0.5, 0.0]), "without_last_1")
    settings = parameters.parse(["--dataset", "digits", "--holdout_classes", "1", "--project", "p", "--group", "g"])
    unseen_classes.log_tables(settings, str(tmp_path / "protocol"), per_class, summary)
    table = logged["unseen_classes/summary"]
    assert table.columns == ["classes", "n_classes", "all_classes", "without_last_1", "drop"]
    assert table.data[0] == ["held out", 1, 0.5, 0.0, 0.5]
    assert logged["unseen_classes/per_class_precision_at_1"].data[2][:3] == ["c", True, 2]
    assert logged["init"]["group"] == "g" and logged["finished"]


@pytest.mark.parametrize("argv,fragment", [
    ([], "needs --holdout_classes N"),
    (["--holdout_classes", "1", "--resume"], "drop --resume"),
    # every training is checked before the first starts: here the second has no training class left
    (["--holdout_classes", "5"], "the without_last_5 training of the protocol cannot run"),
    # the batches too: 2 classes left where a batch of 30 with 10 a class needs 3 distinct ones
    (["--holdout_classes", "3", "--data_sampler", "m_per_class"],
     "the without_last_3 training of the protocol cannot run: --data_sampler m_per_class with a batch of 30 and 10 "
     "samples per class needs 3 classes but the training split has only 2; lower --bs"),
])
def test_protocol_mistakes_are_one_line_errors(argv, fragment, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        unseen_classes.main(TINY + ["--save_path", str(tmp_path)] + argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and fragment in error[0]
    assert list(tmp_path.iterdir()) == []  # no training started, no folder made
