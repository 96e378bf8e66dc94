"""End to end through main.py: the files a run promises, and one-line errors for user mistakes."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

import architectures
from tests import program
from tests.images import write_class_tree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = ["--dataset", "digits", "--arch", "resnet18_frozen_normalize", "--not_pretrained", "--embed_dim", "16",
          "--bs", "50", "--samples_per_class", "10", "--lr", "1e-4", "--kernels", "0"]


def run_main(argv, **env):
    return subprocess.run([sys.executable, "main.py", *argv], cwd=REPO, capture_output=True, text=True,
                          env=program.environment(**env), timeout=program.PATIENCE)


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def only_folder(save_path):
    (folder,) = [os.path.join(save_path, name) for name in os.listdir(save_path)]
    return folder


@pytest.mark.slow
def test_digits_obd_sd_run_writes_everything_it_promises(tmp_path):
    result = run_main(DIGITS + ["--n_epochs", "2", "--PSD", "--OBDP", "--save_path", str(tmp_path),
                                "--savename", "demo", "--progress_every", "0"])
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "demo"
    assert f"run saved in {folder}" in result.stdout
    assert "e_recall@1" in result.stdout and "nmi" in result.stdout
    # no terminal here: a progress line every step instead of a bar
    progress = [line for line in result.stdout.splitlines() if line.startswith("epoch ") and " step " in line]
    assert len(progress) == 2 * (901 // 50) and progress[-1].startswith("epoch 2/2 step 18/18: loss ")
    assert progress[-1].endswith("images/s, 0:00:00 left in the epoch")

    config = json.loads((folder / "config.json").read_text())
    assert config["PSD"] and config["OBDP"] and config["n_epochs"] == 2

    metrics = read_csv(folder / "metrics.csv")
    assert [(row["epoch"], row["split"]) for row in metrics] == [("0", "test"), ("1", "test"), ("2", "test")]
    for row in metrics:
        for name in ("e_recall@1", "e_recall@2", "e_recall@4", "e_recall@8", "nmi"):
            assert 0 <= float(row[name]) <= 1
        assert float(row["e_recall@1"]) <= float(row["e_recall@8"])
    assert metrics[0]["best_for"] == "" and metrics[1]["best_for"] == "e_recall@1"  # epoch 0 is never selected

    training = read_csv(folder / "training.csv")
    assert [float(row["kd_weight"]) for row in training] == [0.0, 0.5 * 75]
    assert float(training[0]["kd"]) == 0 and float(training[1]["kd"]) > 0
    assert all(float(row["loss"]) > 0 for row in training)

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["selection_split"] == "test" and "epoch 0 (before training) is evaluated, never selected" \
        in summary["selection"]
    best = summary["best"]["e_recall@1"]
    assert best["epoch"] > 0 and best["value"] == max(float(row["e_recall@1"]) for row in metrics[1:])
    assert best["checkpoint"] == "checkpoint_best_e_recall@1.pth"

    checkpoint = torch.load(folder / "checkpoint_last.pth", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["arch"] == "resnet18_frozen_normalize"
    model = architectures.select(checkpoint["arch"], checkpoint["embed_dim"], pretrained=False)
    model.load_state_dict(checkpoint["network"])
    assert os.path.exists(folder / best["checkpoint"])
    assert not [name for name in os.listdir(folder) if name.endswith(".tmp")]
    reports = ["recall_curves.png", "retrieval_test.png", "tsne_test.png", "tsne_thumbnails_test.png",
               "similarity_test.png", "confusion_test.png"]
    assert f"reports: {', '.join(reports)}, retrieval_page_test/index.html" in result.stdout
    assert all(os.path.getsize(folder / name) > 0 for name in reports + ["retrieval_page_test/index.html"])

    # A second run with the same name gets its own folder instead of overwriting the first.
    again = run_main(DIGITS + ["--n_epochs", "1", "--save_path", str(tmp_path), "--savename", "demo"])
    assert again.returncode == 0 and os.path.exists(tmp_path / "demo_1" / "summary.json")


@pytest.mark.slow
def test_margin_run_with_validation_split_selects_on_val(tmp_path):
    result = run_main(DIGITS + ["--n_epochs", "1", "--loss", "margin_obd_sd", "--PSD", "--OBDP", "--use_tv_split",
                                "--tv_split_perc", "0.6", "--bs", "30", "--save_path", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    folder = only_folder(tmp_path)
    rows = read_csv(os.path.join(folder, "metrics.csv"))
    assert sorted({row["split"] for row in rows}) == ["test", "val"]
    assert all(row["best_for"] == "" for row in rows if row["split"] == "test")
    summary = json.load(open(os.path.join(folder, "summary.json")))
    assert summary["selection_split"] == "val"
    assert "chosen on the val split" in result.stdout


@pytest.fixture(scope="module")
def cub_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "cub200"
    return write_class_tree(root, ["001.Black_footed_Albatross", "002.Laysan_Albatross",
                                   "003.Sooty_Albatross", "004.Groove_billed_Ani"], images_per_class=4)


def test_one_epoch_on_a_cub_layout_tree(cub_tree, tmp_path):
    result = run_main(["--dataset", "cub200", "--source", str(cub_tree.parent), "--not_pretrained",
                       "--arch", "resnet18_frozen_normalize", "--n_epochs", "1", "--bs", "4",
                       "--samples_per_class", "2", "--kernels", "1", "--PSD", "--OBDP", "--save_path", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    rows = read_csv(os.path.join(only_folder(tmp_path), "metrics.csv"))
    assert [row["epoch"] for row in rows] == ["0", "1"]


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_dataset_folder(tmp_path):
    result = run_main(["--dataset", "cub200", "--source", str(tmp_path / "nowhere"), "--not_pretrained",
                       "--save_path", str(tmp_path)])
    assert_one_line_error(result, "nowhere", "images/")


def test_unreadable_image_is_named(cub_tree, tmp_path):
    broken = cub_tree / "images" / "003.Sooty_Albatross" / "img_0.jpg"
    original = broken.read_bytes()
    broken.write_bytes(b"not a jpeg")
    try:
        result = run_main(["--dataset", "cub200", "--source", str(cub_tree), "--not_pretrained", "--bs", "4",
                           "--arch", "resnet18", "--n_epochs", "1", "--kernels", "1", "--save_path", str(tmp_path)])
    finally:
        broken.write_bytes(original)
    assert_one_line_error(result, "img_0.jpg")


def test_missing_imagenet_weights_name_the_file_and_the_way_out(cub_tree, tmp_path):
    result = run_main(["--dataset", "cub200", "--source", str(cub_tree), "--arch", "resnet18",
                       "--save_path", str(tmp_path)], TORCH_HOME=str(tmp_path / "torch_home"))
    assert_one_line_error(result, "resnet18-", "--not_pretrained")


def test_m_per_class_batch_needs_more_classes_than_the_split_has(cub_tree, tmp_path):
    result = run_main(["--dataset", "cub200", "--source", str(cub_tree), "--not_pretrained", "--arch", "resnet18",
                       "--data_sampler", "m_per_class", "--save_path", str(tmp_path)])
    assert_one_line_error(result, "--samples_per_class", "--data_sampler class_random")


def test_online_logging_without_key_or_offline_mode(tmp_path):
    env = {"WANDB_API_KEY": "", "WANDB_MODE": ""}
    result = run_main(DIGITS + ["--log_online", "--n_epochs", "1", "--save_path", str(tmp_path)], **env)
    assert_one_line_error(result, "WANDB_API_KEY", "WANDB_MODE=offline")


def test_unknown_names_list_the_valid_ones():
    result = run_main(["--loss", "tripletx"])
    assert result.returncode == 2 and "multisimilarity" in result.stderr and "Traceback" not in result.stderr
