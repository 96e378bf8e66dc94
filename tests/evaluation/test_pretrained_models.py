"""Test_pretrained_models.py on the paper's checkpoint format and on this codebase's."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from torch.nn import functional as F

import architectures
import datasets
import Test_pretrained_models
from datasets.image_dataset import load_rgb
from datasets.transforms import Preprocessing
from tests import program
from tests.images import write_class_tree

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
               "004.Groove_billed_Ani", "005.Crested_Auklet", "006.Least_Auklet"]


def paper_checkpoint(resnet, embed_dim):
    """A state dict as the paper released them: the ResNet under model. with the classifier as
    model.last_linear, plus layer_blocks.0..3 aliasing layer1..layer4. `resnet.fc` becomes the head."""
    resnet.fc = torch.nn.Linear(resnet.fc.in_features, embed_dim)
    state = {f"model.{key.replace('fc.', 'last_linear.', 1) if key.startswith('fc.') else key}": value
             for key, value in resnet.state_dict().items()}
    for block in range(4):
        for key, value in getattr(resnet, f"layer{block + 1}").state_dict().items():
            state[f"layer_blocks.{block}.{key}"] = value
    return state


@pytest.fixture(scope="module")
def cub_tree(tmp_path_factory):
    return write_class_tree(tmp_path_factory.mktemp("data") / "cub200", CUB_CLASSES, images_per_class=3)


def test_paper_checkpoint_gives_the_recall_of_embeddings_computed_directly(cub_tree, tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50()
    path = tmp_path / "net.pth"
    torch.save(paper_checkpoint(resnet, 128), path)
    result = subprocess.run([sys.executable, "Test_pretrained_models.py", "--dataset", "cub200", "--source",
                             str(cub_tree), "--checkpoint", str(path), "--arch", "resnet50_frozen_normalize",
                             "--embed_dim", "128", "--kernels", "0", "--save_embeddings", str(tmp_path / "e.npy")],
                            cwd=REPO, capture_output=True, text=True, timeout=program.PATIENCE,
                            env=program.environment())
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "net_test.json").read_text())
    assert report["format"] == "paper" and report["images"] == 9
    assert set(report["metrics"]) == {"e_recall@1", "e_recall@2", "e_recall@4", "e_recall@8", "nmi", "mAP@R"}
    assert f"{report['metrics']['e_recall@1']:.4f}" in result.stdout

    # The same network by hand: torchvision's forward with fc as the head, then L2 normalisation.
    paths = datasets.select("cub200", str(cub_tree))["test"].paths
    transform = Preprocessing().evaluation("base")
    labels = np.repeat(np.arange(3), 3)
    with torch.no_grad():
        direct = F.normalize(resnet.eval()(torch.stack([transform(load_rgb(p)) for p in paths])), dim=1).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), direct, atol=1e-5)
    distances = ((direct[:, None] - direct[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    assert report["metrics"]["e_recall@1"] == pytest.approx(np.mean(labels[distances.argmin(1)] == labels))


def run_in_process(argv, capsys):
    return program.run_command(Test_pretrained_models.main, argv, capsys)


def test_a_checkpoint_of_another_network_says_what_it_holds(tmp_path, capsys):
    path = tmp_path / "net.pth"
    torch.save(paper_checkpoint(torchvision.models.resnet18(), 32), path)
    code, _, err = run_in_process(["--dataset", "digits", "--checkpoint", str(path), "--arch",
                                   "resnet50_frozen_normalize", "--embed_dim", "128"], capsys)
    program.assert_one_line_error(code, err, "resnet18 with embed_dim 32", "_double cannot be read", "--arch resnet50")


def test_published_checkpoints_are_found_by_the_paper_flags(cub_tree, tmp_path, capsys):
    folder = tmp_path / "NMI" / "OBDSD_d512" / "cub200"
    folder.mkdir(parents=True)
    torch.save(paper_checkpoint(torchvision.models.resnet18(), 512), folder / "net.pth")
    argv = ["--dataset", "cub200", "--source", str(cub_tree), "--PSD", "--OBDP", "--embed_dim", "512",
            "--selected_by", "NMI", "--results_root", str(tmp_path), "--arch", "resnet18_frozen_normalize_double",
            "--kernels", "0"]
    code, out, err = run_in_process(argv, capsys)
    assert code == 0, err
    assert "note: the paper trained OBDSD_d512 with --arch resnet50_frozen_normalize_double" in err
    report = json.loads((folder / "net_test.json").read_text())
    assert report["arch"] == "resnet18_frozen_normalize_double" and report["embed_dim"] == 512
    assert 0 <= report["metrics"]["mAP@R"] <= 1 and report["images"] == 9

    code, _, err = run_in_process(["--dataset", "digits", "--PSD", "--results_root", str(tmp_path)], capsys)
    program.assert_one_line_error(code, err, os.path.join(str(tmp_path), "Recall", "PSD", "digits", "net.pth"))
    code, _, err = run_in_process(["--dataset", "digits"], capsys)
    program.assert_one_line_error(code, err, "--PSD", "--checkpoint")


def test_this_codebases_checkpoints_carry_their_arch(cub_tree, tmp_path, capsys):
    network = architectures.select("resnet18_normalize", 16, pretrained=False)
    path = tmp_path / "checkpoint_best_e_recall@1.pth"
    torch.save({"network": network.state_dict(), "arch": "resnet18_normalize", "embed_dim": 16, "epoch": 3,
                "config": {"dataset": "digits"}}, path)
    out_file = tmp_path / "result.json"
    code, out, err = run_in_process(["--dataset", "cub200", "--source", str(cub_tree), "--checkpoint", str(path),
                                     "--kernels", "0", "--evaluation_metrics", "e_recall@1", "mAP@R", "--out",
                                     str(out_file)], capsys)
    assert code == 0, err
    assert json.loads(out_file.read_text())["format"] == "codebase" and "codebase format" in out
    code, _, err = run_in_process(["--dataset", "digits", "--checkpoint", str(path), "--embed_dim", "32"], capsys)
    program.assert_one_line_error(code, err, "embed_dim 16", "--embed_dim 32")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    code, _, err = run_in_process(["--dataset", "digits", "--checkpoint", str(tmp_path / "broken.pth")], capsys)
    program.assert_one_line_error(code, err, "broken.pth", "not a readable checkpoint")


@pytest.mark.parametrize("content", ["image,label\nimg_0.jpg,3\n", "hello world\n", "{not: pickle}", ""])
def test_every_command_refuses_a_text_file_given_as_a_checkpoint(tmp_path, capsys, content):
    from evaluation import export
    from tests.program import run_main

    path = tmp_path / "notes.csv"
    path.write_text(content)
    program.assert_one_line_error(*run_in_process(["--dataset", "digits", "--checkpoint", str(path)], capsys)[::2],
                          f"{path} is not a readable checkpoint")
    for command, argv in [(run_main, ["--dataset", "digits", "--not_pretrained", "--arch", "resnet18",
                                       "--init_from", str(path), "--save_path", str(tmp_path / "runs")]),
                          (export.main, ["--checkpoint", str(path), "--images", str(tmp_path), "--out",
                                         str(tmp_path / "emb")])]:
        try:
            code = command(argv)
        except SystemExit as stop:
            code = stop.code
        program.assert_one_line_error(code, capsys.readouterr().err, f"{path} is not a readable checkpoint")
    assert not (tmp_path / "runs").exists()


def test_an_inshop_checkpoint_is_tested_query_against_gallery(tmp_path, capsys):
    from tests.images import write_inshop_tree

    root = write_inshop_tree(tmp_path / "inshop")
    torch.manual_seed(0)
    network = architectures.select("resnet18_normalize", 16, pretrained=False)
    path = tmp_path / "net.pth"
    torch.save({"network": network.state_dict(), **architectures.describe(network), "epoch": 1, "config": {}}, path)
    code, out, err = run_in_process(["--dataset", "inshop", "--source", str(root), "--checkpoint", str(path),
                                     "--kernels", "0"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "net_test.json").read_text())
    assert report["protocol"] == "query_gallery" and report["images"] == 3
    assert list(report["metrics"]) == ["e_recall@1", "e_recall@10", "e_recall@20", "e_recall@30", "e_recall@40",
                                       "mAP@R"]
    assert report["metrics"]["e_recall@10"] == 1.0  # the 6 gallery images are all within 10
    assert "against the 6 gallery images" in out


def digits_checkpoint(tmp_path, image_size=None):
    network = architectures.select("resnet18_normalize", 16, pretrained=False, image_size=image_size)
    path = tmp_path / "checkpoint_last.pth"
    torch.save({"network": network.state_dict(), "arch": "resnet18_normalize", "embed_dim": 16, "epoch": 1,
                "config": {"dataset": "digits", **({"image_size": image_size} if image_size else {})}}, path)
    return network, path


def test_a_digits_network_trained_at_another_size_is_tested_at_that_size(tmp_path, capsys):
    network, path = digits_checkpoint(tmp_path, image_size=48)
    code, _, err = run_in_process(["--dataset", "digits", "--checkpoint", str(path), "--kernels", "0",
                                   "--save_embeddings", str(tmp_path / "e.npy")], capsys)
    assert code == 0, err
    test = datasets.select("digits", None, image_size=48, **architectures.preprocessing("resnet18_normalize", 48))
    test = test["test"]
    assert test[0][0].shape == (3, 48, 48)
    with torch.no_grad():
        direct = network.eval()(torch.stack([test[index][0] for index in range(len(test))])).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), direct, atol=1e-5)
    from evaluation import networks  # export, classify, the index and explain take the same input

    assert networks.evaluation_preprocessing(networks.load(str(path))).crop_size == 48
    assert networks.evaluation_preprocessing(networks.load(str(digits_checkpoint(tmp_path)[1]))).crop_size == 32


@pytest.mark.parametrize("policy", [None, "drop", "fail"])
def test_duplicates_in_the_test_split_are_warned_of_dropped_or_stop(tmp_path, capsys, policy):
    from tests.images import write_image

    rows = []
    for number in range(8):
        write_image(tmp_path / "img" / f"{number}.png", seed=number)
        rows.append(f"img/{number}.png {number // 2}\n")
    (tmp_path / "train.txt").write_text("".join(rows[:4]))
    # two test images listed twice, the second under another class: a conflict
    (tmp_path / "test.txt").write_text("".join(rows[4:] + [rows[4], "img/5.png 3\n"]))
    _, path = digits_checkpoint(tmp_path)
    argv = ["--dataset", "list", "--train_list", str(tmp_path / "train.txt"), "--test_list",
            str(tmp_path / "test.txt"), "--checkpoint", str(path), "--kernels", "0",
            *(["--duplicates", policy] if policy else [])]
    code, _, err = run_in_process(argv, capsys)
    if policy == "fail":
        program.assert_one_line_error(code, err, "2 duplicate image(s) (2 in test", "1 of them a conflict, the same "
                                      "image under two classes (first: test ", "img/5.png", "under class 3, not 2)",
                                      "give each image one class", "--duplicates drop")
        return
    assert code == 0, err
    report = json.loads((tmp_path / "checkpoint_last_test.json").read_text())
    # drop: the copies, and the conflict's original, whose class is as doubtful as its copy's
    assert report["images"] == (3 if policy == "drop" else 6)
    assert report["duplicates"] == {"policy": policy or "warn", "copies": 2, "conflicts": 1}
    assert ("warning: kept 2 duplicate image(s)" in err) == (policy is None)
    assert "1 of them a conflict, the same image under two classes" in err
