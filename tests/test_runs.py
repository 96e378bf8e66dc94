"""Runs that survive: resume after SIGKILL, atomic and safe checkpoints, one-line errors for bad input."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import main
from tests.images import write_class_tree
from tests.test_datasets import write_sop_tree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = ["--dataset", "digits", "--arch", "resnet18_frozen_normalize", "--not_pretrained", "--embed_dim", "16",
          "--bs", "50", "--samples_per_class", "10", "--lr", "1e-4", "--kernels", "1", "--PSD", "--OBDP",
          "--loss", "margin", "--deterministic", "--n_epochs", "2"]


def start(argv):
    return subprocess.Popen([sys.executable, "main.py", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_runs_killed_at_random_moments_resume_to_the_same_metrics(tmp_path):
    began = time.time()
    reference = start(DIGITS + ["--save_path", str(tmp_path), "--savename", "reference"])
    assert reference.wait(timeout=600) == 0, reference.stderr.read()
    duration = time.time() - began
    expected = (tmp_path / "reference" / "metrics.csv").read_text()
    moments = random.Random(0).sample(range(15, 95), 3)
    for moment in moments:
        argv = DIGITS + ["--save_path", str(tmp_path), "--savename", f"killed_{moment}", "--resume"]
        victim = start(argv)
        time.sleep(duration * moment / 100)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        resumed = start(argv)
        assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
        run = tmp_path / f"killed_{moment}"
        assert (run / "metrics.csv").read_text() == expected, f"killed at {moment}% of the run"
        assert not list(run.glob("*.tmp")) or (run / "checkpoint_last.pth").exists()


def run_main(argv, capsys):
    """main.main in this process: (exit status, stderr, stdout)."""
    try:
        main.main(argv)
        status = 0
    except SystemExit as exit_info:
        status = exit_info.code
    captured = capsys.readouterr()
    return status, captured.err, captured.out


def assert_one_line_error(result, *fragments):
    status, stderr, _ = result
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in stderr, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def cub(tmp_path):
    return write_class_tree(tmp_path / "cub200", ["001.A", "002.B", "003.C", "004.D"], images_per_class=4)


def tiny(tree, tmp_path, *extra):
    return ["--dataset", tree.name, "--source", str(tree), "--not_pretrained", "--arch", "resnet18", "--bs", "4",
            "--n_epochs", "1", "--kernels", "0", "--save_path", str(tmp_path / "runs"), *extra]


def test_empty_dataset_folder(tmp_path, capsys):
    (tmp_path / "cub200" / "images").mkdir(parents=True)
    assert_one_line_error(run_main(tiny(tmp_path / "cub200", tmp_path), capsys), "no class folders")


def test_class_folder_without_images(cub, tmp_path, capsys):
    (cub / "images" / "005.E").mkdir()
    assert_one_line_error(run_main(tiny(cub, tmp_path), capsys), "005.E holds no images")


def test_non_image_file_among_images_fails_or_is_skipped(cub, tmp_path, capsys):
    (cub / "images" / "002.B" / "readme.txt").write_text("notes")
    assert_one_line_error(run_main(tiny(cub, tmp_path), capsys), "readme.txt is not an image",
                          "--on_bad_image skip")
    assert run_main(tiny(cub, tmp_path, "--on_bad_image", "skip"), capsys)[0] == 0


def test_corrupt_image_is_named_or_skipped_and_counted(cub, tmp_path, capsys):
    (cub / "images" / "003.C" / "img_2.jpg").write_bytes(b"\xff\xd8 truncated")
    assert_one_line_error(run_main(tiny(cub, tmp_path), capsys), "img_2.jpg")
    status, _, out = run_main(tiny(cub, tmp_path, "--on_bad_image", "skip"), capsys)
    assert status == 0 and "skipped 1 files that are not readable images" in out


def test_info_files_with_wrong_columns(tmp_path, capsys):
    root = write_sop_tree(tmp_path / "online_products", train_header="id class path")
    assert_one_line_error(run_main(tiny(root, tmp_path), capsys), "Ebay_train.txt", "image_id class_id")


@pytest.mark.parametrize("argv,fragments", [
    (["--samples_per_class", "8", "--bs", "16", "--data_sampler", "m_per_class"],
     ["--samples_per_class 8 is above the largest training class"]),
    (["--gpu", "0"], ["no CUDA GPU"]),
])
def test_run_time_configuration_errors(cub, tmp_path, capsys, argv, fragments):
    if "--gpu" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_one_line_error(run_main(tiny(cub, tmp_path, *argv), capsys), *fragments)


@pytest.mark.parametrize("argv,fragment", [(["--bs", "5"], "not a multiple of --samples_per_class"),
                                           (["--embed_dim", "0"], "--embed_dim must be positive"),
                                           (["--arch", "resnet51"], "unknown architecture 'resnet51'")])
def test_flag_errors_exit_2_without_traceback(cub, tmp_path, capsys, argv, fragment):
    status, stderr, _ = run_main(tiny(cub, tmp_path, *argv), capsys)
    assert status == 2 and fragment in stderr and "Traceback" not in stderr


def test_unwritable_save_path(cub, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    argv = tiny(cub, tmp_path)
    argv[argv.index("--save_path") + 1] = str(blocker / "runs")
    assert_one_line_error(run_main(argv, capsys), "--save_path", "writable")


def test_online_logging_without_key(cub, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert_one_line_error(run_main(tiny(cub, tmp_path, "--log_online"), capsys), "WANDB_API_KEY")


def test_resume_refuses_other_flags_and_bad_checkpoints(cub, tmp_path, capsys):
    argv = tiny(cub, tmp_path, "--savename", "run")
    assert run_main(argv, capsys)[0] == 0
    assert_one_line_error(run_main(argv + ["--resume", "--lr", "0.1"], capsys), "lr: 1e-05 -> 0.1", "--resume_force")
    checkpoint = tmp_path / "runs" / "run" / "checkpoint_last.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    assert_one_line_error(run_main(argv + ["--resume"], capsys), "checkpoint_last.pth is not a readable checkpoint")
    checkpoint.write_text("plain text")
    assert_one_line_error(run_main(argv + ["--resume"], capsys), "not a readable checkpoint")


def test_checkpoints_load_safely_and_keep_last_and_best_only(cub, tmp_path, capsys):
    assert run_main(tiny(cub, tmp_path, "--savename", "run", "--n_epochs", "2"), capsys)[0] == 0
    run = tmp_path / "runs" / "run"
    assert sorted(path.name for path in run.glob("*.pth")) == ["checkpoint_best_e_recall@1.pth", "checkpoint_last.pth"]
    state = torch.load(run / "checkpoint_last.pth", weights_only=True)
    assert state["epoch"] == 2 and {"optimizer", "criterion", "rng", "best"} <= set(state)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["disk_bytes"] == sum(path.stat().st_size for path in run.rglob("*")
                                        if path.is_file() and path.name != "summary.json")
    assert run_main(tiny(cub, tmp_path, "--savename", "every", "--n_epochs", "2", "--save_every", "1"), capsys)[0] == 0
    assert (tmp_path / "runs" / "every" / "checkpoint_epoch_1.pth").exists()


def test_existing_run_is_never_overwritten_silently(cub, tmp_path, capsys):
    argv = tiny(cub, tmp_path, "--savename", "run")
    run_main(argv, capsys)
    marker = tmp_path / "runs" / "run" / "marker"
    marker.write_text("mine")
    run_main(argv, capsys)
    assert marker.exists() and (tmp_path / "runs" / "run_1" / "summary.json").exists()
    run_main(argv + ["--overwrite"], capsys)
    assert not marker.exists() and (tmp_path / "runs" / "run" / "summary.json").exists()


def test_nonfinite_loss_stops_naming_epoch_and_iteration_or_is_skipped(cub, tmp_path, capsys, monkeypatch):
    import criteria.self_distillation as self_distillation
    calls = {"n": 0}
    forward = self_distillation.SelfDistilledCriterion.forward

    def sometimes_nan(self, *args, **kwargs):
        calls["n"] += 1
        loss = forward(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(self_distillation.SelfDistilledCriterion, "forward", sometimes_nan)
    argv = tiny(cub, tmp_path, "--savename", "nan", "--bs", "2", "--n_epochs", "1")
    assert_one_line_error(run_main(argv, capsys), "in epoch 1, iteration 2", "checkpoint_last.pth is kept")
    assert torch.load(tmp_path / "runs" / "nan" / "checkpoint_last.pth", weights_only=True)["epoch"] == 0
    calls["n"] = 0
    assert run_main(tiny(cub, tmp_path, "--savename", "skip", "--bs", "2", "--skip_nonfinite"), capsys)[0] == 0
    summary = json.loads((tmp_path / "runs" / "skip" / "summary.json").read_text())
    assert summary["skipped_batches"] == 1
