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

from errors import UserError
from tests import program
from tests.datasets.test_datasets import write_sop_tree
from tests.images import write_class_tree
from training import folder as run_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = ["--dataset", "digits", "--arch", "resnet18_frozen_normalize", "--not_pretrained", "--embed_dim", "16",
          "--bs", "50", "--samples_per_class", "10", "--lr", "1e-4", "--kernels", "1", "--PSD", "--OBDP",
          "--loss", "margin", "--deterministic", "--n_epochs", "2"]


def _ctrl_c_as_in_a_terminal():
    # a shell starts background jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(argv):
    return subprocess.Popen([sys.executable, "main.py", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal,
                            env=program.environment())


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in this process too, also when the suite runs in the background."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


# a tiny ViT with the ViT recipe: AdamW, a per-step cosine schedule with warm-up, layer decay, clipping
VIT_RECIPE = ["--arch", "timm:vit_tiny_patch16_224_normalize", "--image_size", "32", "--optim", "adamw",
              "--scheduler", "cosine", "--warmup_epochs", "0.5", "--layer_decay", "0.75", "--clip_grad", "3"]


# a cross-batch memory that wraps around within an epoch, with OBDP over its graph in the second epoch
MEMORY = ["--xbm_size", "200", "--xbm_start", "3", "--diffusion_k", "5", "--diffusion_solver", "iterative"]


@pytest.mark.slow
@pytest.mark.parametrize("flags, kills", [([], 3), (VIT_RECIPE, 1), (MEMORY, 1)],
                         ids=["resnet18", "vit_tiny", "memory"])
def test_runs_killed_at_random_moments_resume_to_the_same_metrics(tmp_path, flags, kills):
    began = time.time()
    reference = start(DIGITS + flags + ["--save_path", str(tmp_path), "--savename", "reference"])
    assert reference.wait(timeout=program.PATIENCE) == 0, reference.stderr.read()
    duration = time.time() - began
    expected = (tmp_path / "reference" / "metrics.csv").read_text()
    moments = random.Random(0).sample(range(15, 95), kills)
    for moment in moments:
        argv = DIGITS + flags + ["--save_path", str(tmp_path), "--savename", f"killed_{moment}", "--resume"]
        victim = start(argv)
        time.sleep(duration * moment / 100)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        resumed = start(argv)
        assert resumed.wait(timeout=program.PATIENCE) == 0, resumed.stderr.read()
        run = tmp_path / f"killed_{moment}"
        assert (run / "metrics.csv").read_text() == expected, f"killed at {moment}% of the run"
        assert not list(run.glob("*.tmp")) or (run / "checkpoint_last.pth").exists()


def run_main(argv, capsys):
    """main.py in this process: (exit status, stderr, stdout)."""
    status = program.run_main(argv)
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


def test_resume_of_a_missing_run_names_the_runs_that_exist(cub, tmp_path, capsys):
    assert run_main(tiny(cub, tmp_path, "--savename", "first", "--save_checkpoints", "last"), capsys)[0] == 0
    missing = tmp_path / "runs" / "typo"
    assert_one_line_error(run_main(tiny(cub, tmp_path, "--resume", str(missing)), capsys),
                          f"--resume {missing}: no run to continue there", "runs under --save_path", "first")
    empty = tmp_path / "runs" / "empty"
    empty.mkdir()
    assert_one_line_error(run_main(tiny(cub, tmp_path, "--resume", str(empty)), capsys), "no checkpoint_last.pth")
    assert not (empty / "config.json").exists() and not missing.exists()  # nothing written for a refused run
    # only --resume without a path, with --savename, may start a run, and says so
    status, _, out = run_main(tiny(cub, tmp_path, "--resume", "--savename", "job"), capsys)
    assert status == 0 and "no run to continue at" in out and "starting it there" in out
    assert (tmp_path / "runs" / "job" / "summary.json").exists()


def test_a_second_process_on_a_run_folder_stops_naming_the_first(cub, tmp_path, capsys):
    assert run_main(tiny(cub, tmp_path, "--savename", "run"), capsys)[0] == 0
    folder = tmp_path / "runs" / "run"
    # another process holds the run: flock is per open file, so a child process stands in for it
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                               "from training.folder import RunLock; lock = RunLock(sys.argv[2]); "
                               "print('locked', flush=True); sys.stdin.read()",
                               REPO, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*")
                  if path.is_file() and path.name != "run.lock"}
        assert_one_line_error(run_main(tiny(cub, tmp_path, "--savename", "run", "--resume"), capsys),
                              "is in use by another process", f"pid {holder.pid}")
        assert_one_line_error(run_main(tiny(cub, tmp_path, "--savename", "run", "--overwrite"), capsys),
                              f"pid {holder.pid}")
        after = {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*")
                  if path.is_file() and path.name != "run.lock"}
        assert after == before  # nothing read back, cut or rewritten
    finally:
        holder.kill()
        holder.wait()
    # kill -9 leaves no stale lock
    assert run_main(tiny(cub, tmp_path, "--savename", "run", "--resume"), capsys)[0] == 0


def test_resume_accepts_a_moved_dataset_and_keeps_the_training_time(cub, tmp_path, capsys):
    assert run_main(tiny(cub, tmp_path, "--savename", "run", "--n_epochs", "2"), capsys)[0] == 0
    summary = tmp_path / "runs" / "run" / "summary.json"
    seconds = json.loads(summary.read_text())["train_seconds"]
    moved = tmp_path / "moved" / "cub200"
    moved.parent.mkdir()
    cub.rename(moved)
    argv = tiny(moved, tmp_path, "--savename", "run", "--n_epochs", "2", "--resume", "--no_reports")
    assert run_main(argv, capsys)[0] == 0
    assert json.loads(summary.read_text())["train_seconds"] == seconds


def test_save_checkpoints_none_keeps_the_tables_and_no_checkpoint(cub, tmp_path, capsys):
    assert run_main(tiny(cub, tmp_path, "--savename", "sweep", "--save_checkpoints", "none"), capsys)[0] == 0
    run = tmp_path / "runs" / "sweep"
    assert not list(run.glob("*.pth"))
    assert (run / "metrics.csv").exists() and (run / "training.csv").exists()
    best = json.loads((run / "summary.json").read_text())["best"]["e_recall@1"]
    assert best["epoch"] == 1 and best["checkpoint"] is None
    assert run_main(tiny(cub, tmp_path, "--savename", "best", "--save_checkpoints", "best"), capsys)[0] == 0
    assert [path.name for path in (tmp_path / "runs" / "best").glob("*.pth")] == ["checkpoint_best_e_recall@1.pth"]
    status, err, _ = run_main(tiny(cub, tmp_path, "--savename", "best", "--save_checkpoints", "best", "--resume"),
                              capsys)
    assert status == 2 and "--save_checkpoints best does not keep" in err


def test_a_full_disk_keeps_the_previous_checkpoint(cub, tmp_path, capsys):
    assert run_main(tiny(cub, tmp_path, "--savename", "run"), capsys)[0] == 0
    run = tmp_path / "runs" / "run"
    before = (run / "checkpoint_last.pth").read_bytes()
    (run / "checkpoint_last.pth.tmp").symlink_to("/dev/full")  # the next checkpoint is written there first
    status, err, _ = run_main(tiny(cub, tmp_path, "--savename", "run", "--resume", "--resume_force", "--n_epochs", "2"),
                              capsys)
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"cannot write {run / 'checkpoint_last.pth'} (No space left on device); the previous version is kept" in err
    assert (run / "checkpoint_last.pth").read_bytes() == before and not (run / "checkpoint_last.pth.tmp").exists()


def test_a_full_disk_leaves_a_table_as_it_was(tmp_path, monkeypatch):
    table = tmp_path / "metrics.csv"
    run_folder.append_csv(table, {"epoch": 0, "split": "test", "e_recall@1": 0.5})
    before = table.read_bytes()

    class HalfWritten:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            self.handle.write(text[: len(text) // 2])
            self.handle.flush()
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_folder, "open", lambda *args, **kwargs: HalfWritten(open(*args, **kwargs)), raising=False)
    with pytest.raises(UserError, match="cannot write .*metrics.csv \\(No space left on device\\); the "
                                             "previous version is kept"):
        run_folder.append_csv(table, {"epoch": 1, "split": "test", "e_recall@1": 0.6})
    assert table.read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize("signal_number,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_say_how_to_continue(tmp_path, signal_number, status):
    argv = DIGITS[:-1] + ["20", "--save_path", str(tmp_path), "--savename", "run", "--no_reports"]
    process = start(argv)
    metrics = tmp_path / "run" / "metrics.csv"
    deadline = time.monotonic() + program.PATIENCE
    while not metrics.exists() or len(metrics.read_text().splitlines()) < 3:  # until epoch 1 is logged
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() else ""
        time.sleep(0.2)
    process.send_signal(signal_number)
    stderr = process.communicate(timeout=program.PATIENCE)[1]
    assert process.returncode == status, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"stopped by {signal.Signals(signal_number).name}: {tmp_path / 'run'} holds epoch")
    command = lines[0].split("continue with: ", 1)[1]
    assert command == f"python main.py --config {tmp_path / 'run' / 'config.json'} --resume {tmp_path / 'run'}"
    if signal_number == signal.SIGTERM:  # the command continues the run (to 3 epochs, to keep the test short)
        resumed = subprocess.run([sys.executable, *command.split()[1:], "--n_epochs", "3", "--resume_force"],
                                 cwd=REPO, capture_output=True, text=True, timeout=program.PATIENCE,
                                 env=program.environment())
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming" in resumed.stdout and (tmp_path / "run" / "summary.json").exists()


def test_an_interruption_while_a_checkpoint_is_written_waits_for_the_file(tmp_path, monkeypatch, ctrl_c_raises):
    import checkpoints

    def save_interrupted_midway(content, handle):
        handle.write(b"first half ")
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the write
        handle.write(b"second half")

    monkeypatch.setattr(checkpoints.torch, "save", save_interrupted_midway)
    path = tmp_path / "checkpoint_last.pth"
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save({}, str(path))
    assert path.read_bytes() == b"first half second half" and not (tmp_path / "checkpoint_last.pth.tmp").exists()


def test_reranked_metrics_are_printed_and_k_beyond_the_classes_warns(cub, tmp_path, capsys):
    status, err, out = run_main(tiny(cub, tmp_path, "--evaluation_diffusion", "--evaluation_metrics", "e_recall@1",
                                     "knn_top1", "--no_reports"), capsys)
    assert status == 0, err
    header = next(line for line in out.splitlines() if line.split()[:2] == ["epoch", "split"])
    assert header.split()[2:] == ["e_recall@1", "knn_top1", "e_recall@1+diffusion", "knn_top1+diffusion"]
    # the test split holds 2 classes of 4 images: 3 neighbours of the query's class at most
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: knn_top1 looks at 20 neighbours, but the median class of the test split holds 4 images: most "
        "neighbours are of other classes; use 3 or fewer",
        "warning: evaluation_diffusion_k 20 looks at 20 neighbours, but the median class of the test split holds 4 "
        "images: most neighbours are of other classes; use 3 or fewer"]


def test_a_row_with_a_new_column_rewrites_the_table_without_losing_a_row(tmp_path):
    table = tmp_path / "metrics.csv"
    run_folder.append_csv(table, {"epoch": 0, "split": "test", "e_recall@1": 0.5})  # written by an older version
    run_folder.append_csv(table, {"epoch": 1, "split": "test", "protocol": "self", "e_recall@1": 0.6})
    run_folder.append_csv(table, {"epoch": 2, "split": "test", "protocol": "self", "e_recall@1": 0.7})
    rows = run_folder.read_csv(table)
    assert [(row["epoch"], row["protocol"], row["e_recall@1"]) for row in rows] == \
        [("0", "", "0.5"), ("1", "self", "0.6"), ("2", "self", "0.7")]


def test_an_inshop_epoch_ranks_the_queries_against_the_gallery(tmp_path, capsys):
    from tests.images import write_inshop_tree

    root = write_inshop_tree(tmp_path / "inshop")
    status, err, _ = run_main(tiny(root, tmp_path, "--savename", "run", "--bs", "4", "--no_reports"), capsys)
    assert status == 0, err
    run = tmp_path / "runs" / "run"
    rows = run_folder.read_csv(run / "metrics.csv")
    assert [(row["epoch"], row["split"], row["protocol"]) for row in rows] == \
        [("0", "test", "query_gallery"), ("1", "test", "query_gallery")]
    assert list(rows[0])[3:-1] == ["e_recall@1", "e_recall@10", "e_recall@20", "e_recall@30", "e_recall@40", "mAP@R"]
    # 3 queries, each with 2 gallery images of its item among 6: Recall@10 sees the whole gallery
    assert all(float(row["e_recall@10"]) == 1.0 for row in rows)
    assert json.loads((run / "summary.json").read_text())["protocols"] == {"test": "query_gallery"}


def test_the_seen_class_protocol_queries_the_training_images(cub, tmp_path, capsys):
    argv = tiny(cub, tmp_path, "--savename", "run", "--use_tv_split", "--tv_split_by_samples", "--tv_split_perc",
                "0.5", "--evaluation_protocol", "train_gallery", "--no_reports")
    status, err, _ = run_main(argv, capsys)
    assert status == 0, err
    rows = run_folder.read_csv(tmp_path / "runs" / "run" / "metrics.csv")
    assert {(row["split"], row["protocol"]) for row in rows} == {("val", "train_gallery"), ("test", "self")}
    summary = json.loads((tmp_path / "runs" / "run" / "summary.json").read_text())
    assert summary["selection_split"] == "val" and summary["protocols"] == {"val": "train_gallery", "test": "self"}
