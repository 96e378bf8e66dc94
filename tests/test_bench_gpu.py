"""benchmarks.gpu, the one script of GPU measurements: its --quick mode runs every section end to
end on the CPU, a section that overruns its time guard is stopped without stopping the others,
and without a GPU the full run is refused in one line."""
import json
import math
import time

import pytest
import torch

from benchmarks import gpu
from tests import program


def test_quick_mode_measures_every_section_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    gpu.main(["--quick", "--out", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert {"device", "gpus", "quick", "torch", "cuda", "weights", "time_limit_s", "seconds",
            "sections"} <= report.keys()
    assert report["quick"] is True and "not_pretrained" in report["weights"]
    sections = report["sections"]
    assert list(sections) == ["loader", "train_step/resnet", "train_step/vit", "criterion", "diffusion",
                              "evaluation", "nccl"]
    assert sections["nccl"] == {**sections["nccl"], "status": "skipped: --quick runs on the CPU", "figures": {}}
    for name, record in sections.items():
        assert {"status", "seconds", "budget_s", "figures", "sizes"} <= record.keys(), name
        if name != "nccl":
            assert record["status"] == "done", (name, record["status"])
            assert record["figures"], name
        for figure, value in record["figures"].items():
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, figure, value)
            assert math.isfinite(value) and value > 0, (name, figure, value)
    for figure in ("baseline step (ms)", "+PSD step (ms)", "+OBD-SD step (ms)", "teacher forward alone (ms)"):
        assert figure in sections["train_step/resnet"]["figures"] and figure in sections["train_step/vit"]["figures"]
    assert "| section | status | figure | value |" in printed
    assert out.with_suffix(".md").read_text().strip() in printed
    for name in sections:
        assert f"| {name}" in printed


def test_a_section_past_its_time_guard_is_stopped_and_the_next_one_runs():
    def endless(figures, budget):
        figures["before the guard"] = 1.0
        while True:  # stopped only by the guard, however slow the machine
            time.sleep(0.01)

    def quick(figures, budget):
        figures["measured"] = 2.0

    records = gpu.run_sections({"endless": endless, "quick": quick}, {"endless": 0.2, "quick": 60}, time_limit=600)
    assert records["endless"]["status"] == "stopped by its time guard after 0.2 s"
    assert records["endless"]["figures"] == {"before the guard": 1.0}
    assert records["quick"]["status"] == "done" and records["quick"]["figures"] == {"measured": 2.0}


def test_a_failing_section_is_recorded_and_the_next_one_runs():
    def failing(figures, budget):
        raise RuntimeError("CUDA out of memory\nmore")

    records = gpu.run_sections({"failing": failing, "skipping": lambda figures, budget: "skipped: one GPU"},
                               {"failing": 60, "skipping": 60}, time_limit=600)
    assert records["failing"]["status"] == "failed: RuntimeError: CUDA out of memory"
    assert records["skipping"]["status"] == "skipped: one GPU"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_full_run_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu.main(["--out", str(tmp_path / "bench.json")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err == "error: no CUDA GPU; use --quick for the CPU check\n"
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one_process_on_the_concatenated_batches():
    # The NCCL section's comparison, here with gloo on the CPU (the same code path but the backend).
    result = gpu.distributed_equality(gpu.QUICK["nccl"], quick=True, timeout=program.PATIENCE)
    assert result["backend"] == "gloo" and result["steps"] == gpu.QUICK["nccl"]["steps"]
    assert result["equal within atol 1e-5, rtol 1e-4"] is True
    assert result["max loss difference"] < 1e-5
