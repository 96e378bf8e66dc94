"""Every criterion trains through main.py on digits: two steps (one per epoch, so that the
second one carries the self-distillation term), plain and as <loss>_obd_sd with --PSD --OBDP."""
import csv
import importlib.util
import math

import numpy as np
import pytest
import torch

import criteria
import datasampler.base
import datasets
from tests import program

TINY = ["--dataset", "digits", "--arch", "resnet18_frozen_normalize", "--not_pretrained", "--embed_dim", "16",
        "--kernels", "0", "--n_epochs", "2", "--bs", "12", "--samples_per_class", "3", "--lr", "1e-4",
        "--evaluation_metrics", "e_recall@1", "--save_checkpoints", "none", "--no_reports"]
pytestmark = pytest.mark.slow  # end-to-end runs through main.py
HAS_PML = importlib.util.find_spec("pytorch_metric_learning") is not None
NEEDS_PML = pytest.mark.skipif(not HAS_PML, reason="pytorch-metric-learning is not installed")

RUNS = ([pytest.param(name, [], id=name) for name in sorted(criteria.CRITERIA)]
        + [pytest.param("contrastive", ["--distance", "cosine", "--batch_mining", "epshn"], id="contrastive-cosine")]
        + [pytest.param(f"pml:{name}", [], id=f"pml-{name}", marks=NEEDS_PML)
           for name in ("TripletMarginLoss", "ProxyAnchorLoss")])


@pytest.fixture
def two_steps(monkeypatch):
    """One batch per epoch and a 20-image test split (TINY keeps no checkpoint and draws no report),
    on one thread (on 2 shared cores, two threads make these tiny convolutions 3x slower)."""
    monkeypatch.setattr(datasampler.base.BatchSampler, "__len__", lambda self: 1)
    select_datasets = datasets.select

    def small_test_split(*args, **kwargs):
        splits = select_datasets(*args, **kwargs)
        splits["test"] = splits["test"].subset(np.arange(0, len(splits["test"]), 45))
        return splits

    monkeypatch.setattr(datasets, "select", small_test_split)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("distilled", [False, True], ids=["plain", "PSD-OBDP"])
@pytest.mark.parametrize("loss,flags", RUNS)
def test_criterion_trains_two_steps(loss, flags, distilled, two_steps, tmp_path):
    argv = TINY + flags + ["--save_path", str(tmp_path), "--savename", "run"]
    argv += ["--loss", f"{loss}_obd_sd", "--PSD", "--OBDP"] if distilled else ["--loss", loss]
    assert program.run_main(argv) == 0
    training = read_csv(tmp_path / "run" / "training.csv")
    assert len(training) == 2 and all(math.isfinite(float(row["loss"])) for row in training)
    # One step per epoch: the teacher of epoch 1 equals the student at its single step, so KL is ~0.
    assert (float(training[1]["kd_weight"]) > 0) == distilled and math.isfinite(float(training[1]["kd"]))
    assert [row["epoch"] for row in read_csv(tmp_path / "run" / "metrics.csv")] == ["0", "1", "2"]


def test_psd_without_obdp_trains(two_steps, tmp_path):
    assert program.run_main(TINY + ["--loss", "triplet", "--PSD", "--save_path", tmp_path, "--savename", "run"]) == 0
    assert float(read_csv(tmp_path / "run" / "training.csv")[1]["kd_weight"]) > 0
