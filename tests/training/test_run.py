"""training.run as a library call: callbacks that hear each epoch and stop the run, a stopped run that
resumes to the metrics of an uninterrupted one, and a run folder of the version before typed settings
that resumes as it is."""
import json

import pytest

import parameters
from tests import program
from tests.images import write_image
from training.folder import read_csv
from training.run import run

FLAGS = ["--dataset", "digits", "--arch", "resnet18_frozen_normalize", "--not_pretrained", "--embed_dim", "16",
         "--bs", "50", "--samples_per_class", "10", "--lr", "1e-4", "--kernels", "0", "--PSD", "--OBDP",
         "--loss", "multisimilarity_obd_sd", "--n_epochs", "3", "--no_reports", "--deterministic"]
# Flags the version before typed settings did not have: its config.json files lack them.
NEWER_FLAGS = {f"evaluation_diffusion_{name}" for name in ("norm", "knn", "solver", "tau", "gamma", "tol", "iters")}


def settings_for(tmp_path, name):
    return parameters.parse(FLAGS + ["--save_path", str(tmp_path), "--savename", name])


def previous_version_config(argv):
    """The config.json that the version before typed settings wrote for `argv`: every flag of the
    parser, every loss's hyperparameters, the protocol left null, the metrics resolved."""
    record = vars(parameters.build_parser().parse_args(argv))
    del record["config"]
    record["evaluation_metrics"] = ["e_recall@1", "e_recall@2", "e_recall@4", "e_recall@8", "nmi"]
    return {key: value for key, value in record.items() if key not in NEWER_FLAGS}


@pytest.mark.slow
def test_a_callback_stops_a_run_that_resumes_to_the_metrics_of_an_uninterrupted_one(tmp_path, one_thread, capsys):
    heard = []
    whole = run(settings_for(tmp_path, "whole"), callbacks=[heard.append])
    rows = read_csv(tmp_path / "whole" / "metrics.csv")
    assert [end.epoch for end in heard] == [1, 2, 3] and whole.stopped_after is None
    for end in heard:  # each epoch's evaluated metrics, as metrics.csv holds them
        row = next(row for row in rows if row["epoch"] == str(end.epoch) and row["split"] == "test")
        assert end.metrics["test"]["e_recall@1"] == pytest.approx(float(row["e_recall@1"]), abs=1e-12)
    assert whole.metrics == rows and whole.selected["e_recall@1"]["epoch"] in (1, 2, 3)

    stopped = run(settings_for(tmp_path, "stopped"), callbacks=[lambda end: end.epoch == 1])
    folder = tmp_path / "stopped"
    assert stopped.stopped_after == 1 and [row["epoch"] for row in stopped.metrics] == ["0", "1"]
    assert json.loads((folder / "summary.json").read_text())["stopped_after"] == 1
    assert "stopped after epoch 1 of 3" in capsys.readouterr().out
    # A complete folder: resumed, here from a config.json in the previous version's format, it ends
    # where the uninterrupted run ended.
    (folder / "config.json").write_text(json.dumps(previous_version_config(FLAGS)))
    assert program.run_main(["--config", folder / "config.json", "--resume", folder]) == 0
    assert (folder / "metrics.csv").read_text() == (tmp_path / "whole" / "metrics.csv").read_text()
    assert "stopped_after" not in json.loads((folder / "summary.json").read_text())


def test_a_callback_that_raises_leaves_a_folder_that_resumes(tmp_path, one_thread):
    class Pruned(Exception):
        pass

    def prune(end):
        raise Pruned(end.epoch)

    settings = parameters.parse(FLAGS[:-4] + ["--n_epochs", "2", "--no_reports", "--save_path", str(tmp_path),
                                              "--savename", "pruned"])
    with pytest.raises(Pruned):
        run(settings, callbacks=[prune])
    folder = tmp_path / "pruned"
    assert [row["epoch"] for row in read_csv(folder / "metrics.csv")] == ["0", "1"]
    assert not (folder / "summary.json").exists()
    resumed = run(settings.replace(folder={"resume": str(folder)}))
    assert [row["epoch"] for row in resumed.metrics] == ["0", "1", "2"]


def test_a_training_split_of_one_class_is_refused_before_the_run_folder(tmp_path, capsys):
    """Its loss was 0.0 at every step, without a word."""
    for number in range(6):
        write_image(tmp_path / "img" / f"{number}.png", seed=number)
    (tmp_path / "train.txt").write_text("".join(f"img/{number}.png 7\n" for number in range(4)))
    (tmp_path / "test.txt").write_text("img/4.png 8\nimg/5.png 9\n")
    runs = tmp_path / "runs"
    tiny = ["--arch", "resnet18", "--not_pretrained", "--embed_dim", "8", "--bs", "4", "--n_epochs", "1",
            "--kernels", "0", "--save_path", runs]
    status = program.run_main(["--dataset", "list", "--train_list", tmp_path / "train.txt", "--test_list",
                               tmp_path / "test.txt", *tiny])
    program.assert_one_line_error(status, capsys.readouterr().err, "the training split holds 1 class (4 images), so "
                                  "multisimilarity would train nothing", "train on more classes")
    # a split cut out of the dataset names the flag that cut it
    status = program.run_main(["--dataset", "digits", "--holdout_classes", "4", "--loss", "softmax", *tiny])
    program.assert_one_line_error(status, capsys.readouterr().err, "the training split left by --holdout_classes 4 "
                                  "holds 1 class (", "so softmax would train nothing")
    assert not runs.exists()
