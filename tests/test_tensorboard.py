"""main.py --log_tensorboard: the scalars of metrics.csv and training.csv, by epoch, and the report
images in the run folder's tensorboard/, also across --resume."""
import csv

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.images import write_class_tree
from tests.program import run_main


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_tensorboard_logs_the_metrics_and_reports_across_a_resume(tmp_path, capsys):
    tree = write_class_tree(tmp_path / "cub200", ["001.A", "002.B", "003.C", "004.D"], images_per_class=4)
    argv = ["--dataset", "cub200", "--source", str(tree), "--not_pretrained", "--arch", "resnet18", "--bs", "4",
            "--kernels", "0", "--save_path", str(tmp_path / "runs"), "--savename", "run", "--log_tensorboard"]
    assert run_main(argv + ["--n_epochs", "1"]) == 0
    assert run_main(argv + ["--n_epochs", "2", "--resume", "--resume_force"]) == 0
    run = tmp_path / "runs" / "run"
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    logged = {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}

    expected = {}
    for row in read_csv(run / "metrics.csv"):
        for name, value in row.items():
            if name not in ("epoch", "split", "protocol", "best_for"):
                expected.setdefault(f"{row['split']}/{name}", []).append((int(row["epoch"]), float(value)))
    for term in ("loss", "lr"):
        expected[f"train/{term}"] = [(int(row["epoch"]), float(row[term])) for row in read_csv(run / "training.csv")]
    assert [step for step, _ in expected["test/e_recall@1"]] == [0, 1, 2]
    for tag, values in expected.items():
        assert [step for step, _ in logged[tag]] == [step for step, _ in values], tag  # each epoch once
        for (_, got), (_, want) in zip(logged[tag], values):
            assert abs(got - want) <= 1e-6 * max(1.0, abs(want)), tag
    images = events.Tags()["images"]
    assert {"reports/recall_curves", "reports/tsne_test", "reports/retrieval_test"} <= set(images)
    assert [event.step for event in events.Images("reports/recall_curves")] == [1, 2]  # each run's end
    assert events.Images("reports/tsne_test")[-1].width > 100
