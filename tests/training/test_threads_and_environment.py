"""Threads from the cores this process may use, and the machine's facts in config.json and
summary.json, which never make a resume refuse."""
import json

import pytest
import torch

import distributed
import parameters
from tests import program
from tests.images import write_class_tree


@pytest.fixture
def kept_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_follow_the_request_then_omp_num_threads_then_the_allowed_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(distributed.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert distributed.cpu_threads() == 3  # a taskset or container share, not os.cpu_count()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.cpu_threads() == 1  # torchrun's processes share the cores
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert distributed.cpu_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert distributed.cpu_threads() == 1
    assert distributed.cpu_threads(4) == 4


def test_a_run_records_its_machine_and_resumes_on_another(tmp_path, capsys, kept_threads):
    tree = write_class_tree(tmp_path / "cub200", ["001.A", "002.B", "003.C", "004.D"], images_per_class=4)
    argv = ["--dataset", "cub200", "--source", str(tree), "--not_pretrained", "--arch", "resnet18", "--bs", "4",
            "--kernels", "0", "--save_path", str(tmp_path / "runs"), "--savename", "run", "--no_reports"]
    assert program.run_main(argv + ["--n_epochs", "1", "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    run = tmp_path / "runs" / "run"
    config = json.loads((run / "config.json").read_text())
    expected = {"torch": str(torch.__version__), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "threads": 1}
    assert config["threads"] == 1 and expected.items() <= config["environment"].items()
    assert json.loads((run / "summary.json").read_text())["environment"] == config["environment"]
    # another torch, CPU and thread count: operational facts, not settings
    config["environment"] |= {"torch": "0.0.1", "cpu_capability": "NO AVX"}
    (run / "config.json").write_text(json.dumps(config))
    assert parameters.parse(["--config", str(run / "config.json")]).training.threads == 1
    assert program.run_main(argv + ["--n_epochs", "1", "--threads", "2", "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["environment"]["threads"] == 2
