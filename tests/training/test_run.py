"""training.run as a library call: callbacks that hear each epoch and stop the run, a stopped run that
resumes to the metrics of an uninterrupted one, and a run folder of the version before typed settings
that resumes as it is."""
import json

import pytest

import parameters
from tests import program
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
