"""--arch timm:<model name>: tiny timm models at random initialisation (vit_tiny_patch16_224 at a
small image size, convnext_atto), their pooling, the suffixes they take, their preprocessing,
their weights offline, and a digits run with --PSD --OBDP and the ViT recipe whose checkpoint
resumes, initialises and feeds Test_pretrained_models.py, export, classify and the reports."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import architectures
import datasets
import Test_pretrained_models
from architectures import timm_models
from errors import UserError
from evaluation import classify, export, networks, reports
from tests.images import write_class_tree
from tests.program import run_main
from training.folder import read_csv

VIT = "timm:vit_tiny_patch16_224"
CONVNEXT = "timm:convnext_atto"


def vit(suffix="_normalize", **options):
    torch.manual_seed(0)
    return architectures.select(VIT + suffix, 16, pretrained=False, image_size=32, **options).eval()


@pytest.mark.parametrize("arch, size", [(VIT + "_normalize", 32), (CONVNEXT + "_normalize", 64),
                                        (CONVNEXT + "_double_normalize", 64)])
def test_timm_backbones_embed_on_the_unit_sphere_and_train(arch, size):
    torch.manual_seed(0)
    network = architectures.select(arch, 16, pretrained=False, image_size=size)
    embeddings = network(torch.randn(4, 3, size, size))
    assert embeddings.shape == (4, 16)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(4))
    embeddings[:, 0].sum().backward()
    assert all(parameter.grad is not None for parameter in network.backbone_parameters())


def test_a_vit_pools_its_class_token_by_default_or_its_patch_tokens_on_request():
    images = torch.randn(2, 3, 32, 32)
    auto, token, patches = (vit("", pooling=pooling) for pooling in ("auto", "class_token", "patch_mean"))
    with torch.no_grad():
        tokens = auto.feature_map(images)
        assert tokens.shape == (2, 1 + 4, 192)  # the class token and 2 x 2 patches
        torch.testing.assert_close(auto(images), auto.model.last_linear(tokens[:, 0]))
        torch.testing.assert_close(token(images), auto(images))
        torch.testing.assert_close(patches(images), auto.model.last_linear(tokens[:, 1:].mean(dim=1)))


def test_a_convnext_pools_through_its_head_norm_also_when_double_pooling():
    torch.manual_seed(0)
    network = architectures.select(CONVNEXT, 8, pretrained=False).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feature_map = network.feature_map(images)
        assert feature_map.dim() == 4
        own = network.model.last_linear(network.model.head.norm(feature_map.mean(dim=(2, 3), keepdim=True)).flatten(1))
        torch.testing.assert_close(network(images), own)
        double = architectures.select(CONVNEXT + "_double", 8, pretrained=False).eval()
        double.load_state_dict(network.state_dict())
        pooled = feature_map.mean(dim=(2, 3), keepdim=True) + feature_map.amax(dim=(2, 3), keepdim=True)
        normed = network.model.head.norm(pooled).flatten(1)
        torch.testing.assert_close(double(images), network.model.last_linear(normed))


@pytest.mark.parametrize("arch, options, message", [
    (CONVNEXT + "_frozen", {}, "has no BatchNorm for _frozen to freeze"),
    (VIT + "_frozen", {}, "has no BatchNorm for _frozen to freeze"),
    (VIT + "_double", {}, "_double pools a spatial feature map"),
    (VIT, {"pooling": "avg"}, "--pooling avg pools a spatial feature map"),
    ("resnet18", {"pooling": "class_token"}, "--pooling class_token takes a vision transformer's tokens"),
    (CONVNEXT, {"image_size": 0, "pooling": "patch_mean"}, "--pooling patch_mean takes"),
])
def test_what_a_backbone_cannot_take_is_one_line(arch, options, message):
    with pytest.raises(UserError, match=message):
        architectures.select(arch, 8, pretrained=False, **options)


def test_frozen_keeps_the_batchnorm_statistics_of_a_timm_cnn():
    torch.manual_seed(0)
    network = architectures.select("timm:resnet18_frozen", 8, pretrained=False).train()
    batchnorm = network.model.bn1
    assert not batchnorm.training
    network(torch.randn(4, 3, 64, 64))
    assert batchnorm.num_batches_tracked == 0


def test_the_transforms_take_the_models_pretrained_config():
    expected = {"crop_size": 224, "resize_size": 248, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                "channel_order": "RGB", "input_range": 1.0, "interpolation": "bicubic"}  # crop_pct 0.9
    assert architectures.preprocessing("timm:vit_small_patch16_224.dino_normalize") == expected
    assert architectures.preprocessing(VIT)["mean"] == (0.5, 0.5, 0.5)  # augreg weights: [-1, 1] inputs
    assert architectures.preprocessing("timm:vit_small_patch14_dinov2")["crop_size"] == 518
    assert architectures.preprocessing("timm:convnext_tiny")["resize_size"] == 235  # 224 / 0.95
    resized = architectures.preprocessing("timm:vit_small_patch16_224.dino", image_size=160)
    assert (resized["crop_size"], resized["resize_size"]) == (160, 177)
    assert architectures.preprocessing("resnet50", image_size=112)["resize_size"] == 128

    tree = write_class_tree_once()
    splits = datasets.select("folder", str(tree), **architectures.preprocessing("timm:vit_small_patch16_224.dino"))
    steps = splits["test"].transform.transforms
    resize, crop, normalize = steps[0], steps[1], steps[-1]
    assert (resize.size, resize.interpolation.value, crop.size) == (248, "bicubic", (224, 224))
    assert tuple(normalize.mean) == expected["mean"] and tuple(normalize.std) == expected["std"]
    assert splits["train"].transform.transforms[0].interpolation.value == "bicubic"


def write_class_tree_once(root=[]):
    if not root:
        import tempfile
        from pathlib import Path

        root.append(write_class_tree(Path(tempfile.mkdtemp()) / "tree", ["a", "b", "c", "d"], images_per_class=2))
    return root[0]


def test_weights_load_from_a_file_or_the_hugging_face_cache(tmp_path, monkeypatch):
    import timm

    torch.manual_seed(1)
    published = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000)
    weights = {key: value.contiguous() for key, value in published.state_dict().items()}
    save_file(weights, tmp_path / "weights.safetensors")
    network = architectures.select(VIT, 8, pretrained_weights=str(tmp_path / "weights.safetensors"))
    torch.testing.assert_close(network.model.blocks[3].mlp.fc1.weight, published.blocks[3].mlp.fc1.weight)
    assert not any(key.startswith("head.") and "weight" in key for key in network.model.state_dict())

    repository = tmp_path / "hub" / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    (repository / "snapshots" / "0123abc").mkdir(parents=True)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text("0123abc")
    shutil.copy(tmp_path / "weights.safetensors", repository / "snapshots" / "0123abc" / "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("socket.create_connection", unreachable)
    network = architectures.select(VIT + "_normalize", 8, image_size=32)  # pretrained, from the cache
    torch.testing.assert_close(network.model.patch_embed.proj.weight, published.patch_embed.proj.weight)
    assert network.model.pos_embed.shape == (1, 1 + 4, 192)  # resampled to 2 x 2 patches


def unreachable(*args, **kwargs):
    raise OSError("network is unreachable")


def test_without_cached_weights_or_network_the_run_stops_at_once_naming_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr("socket.create_connection", unreachable)
    status = run_main(["--dataset", "digits", "--arch", VIT, "--image_size", "32", "--save_path", tmp_path / "runs",
                       "--n_epochs", "1", "--kernels", "0"])
    error = capsys.readouterr().err.strip()
    assert status == 2 and len(error.splitlines()) == 1 and "Traceback" not in error
    assert "weights for timm:vit_tiny_patch16_224 are not cached" in error
    assert str(tmp_path / "empty_hub" / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k") in error
    assert "--pretrained_weights PATH" in error and "--not_pretrained" in error
    assert not (tmp_path / "runs").exists()


def test_unknown_models_and_tags_are_flag_errors(capsys):
    for arch, message in (("timm:vit_tinyy_patch16", "timm has no model 'vit_tinyy_patch16'"),
                          ("timm:vit_tiny_patch16_224.bogus", "timm has no pretrained tag")):
        assert run_main(["--arch", arch]) == 2
        assert message in capsys.readouterr().err


RECIPE = ["--dataset", "digits", "--arch", VIT + "_normalize", "--image_size", "32", "--not_pretrained",
          "--embed_dim", "16", "--bs", "50", "--samples_per_class", "10", "--kernels", "0", "--PSD", "--OBDP",
          "--optim", "adamw", "--lr", "1e-4", "--decay", "0.05", "--scheduler", "cosine", "--warmup_epochs", "0.5",
          "--layer_decay", "0.75", "--clip_grad", "3", "--no_reports"]


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    """Two digits epochs of a tiny ViT with --PSD --OBDP and the ViT recipe."""
    save_path = tmp_path_factory.mktemp("runs")
    assert run_main(RECIPE + ["--n_epochs", "2", "--save_path", save_path, "--savename", "vit"]) == 0
    return save_path / "vit"


def test_a_vit_trains_digits_with_obd_sd_and_the_recipe(vit_run):
    rows = read_csv(vit_run / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert all(0 < float(row["e_recall@1"]) <= 1 for row in rows)
    training = read_csv(vit_run / "training.csv")
    # 18 steps an epoch, 9 of warm-up, then half a cosine to 0 at step 36
    assert float(training[0]["lr"]) == pytest.approx(1e-4 * 0.5 * (1 + np.cos(np.pi * 9 / 27)))
    assert float(training[1]["lr"]) == pytest.approx(0.0, abs=1e-12)
    checkpoint = torch.load(vit_run / "checkpoint_last.pth", weights_only=True)
    assert (checkpoint["arch"], checkpoint["image_size"], checkpoint["pooling"]) == (VIT + "_normalize", 32, "auto")


def test_a_vit_checkpoint_initialises_another_run(vit_run, tmp_path):
    # (exact resume after a kill: tests/test_runs.py)
    assert run_main(RECIPE + ["--n_epochs", "1", "--save_path", tmp_path, "--savename", "init",
                              "--init_from", vit_run / "checkpoint_last.pth"]) == 0
    first = read_csv(tmp_path / "init" / "metrics.csv")[0]
    assert first["e_recall@1"] == read_csv(vit_run / "metrics.csv")[-1]["e_recall@1"]


def test_the_tools_read_a_vit_checkpoint(vit_run, tmp_path, capsys):
    checkpoint_path = str(vit_run / "checkpoint_last.pth")
    checkpoint = networks.load(checkpoint_path)
    assert checkpoint.network.image_size == 32 and checkpoint.network.tokens
    Test_pretrained_models.main(["--checkpoint", checkpoint_path, "--dataset", "digits", "--kernels", "0",
                                 "--out", str(tmp_path / "test.json")])
    result = json.loads((tmp_path / "test.json").read_text())
    assert result["metrics"]["e_recall@1"] == pytest.approx(float(read_csv(vit_run / "metrics.csv")[-1]["e_recall@1"]))

    reference = write_class_tree(tmp_path / "reference", ["cat", "dog"], images_per_class=2) / "images"
    export.main(["--checkpoint", checkpoint_path, "--images", str(reference), "--out", str(tmp_path / "e"),
                 "--kernels", "0"])
    assert np.load(tmp_path / "e.npy").shape == (4, 16)
    classify.main(["--checkpoint", checkpoint_path, "--reference", str(reference), "--images", str(reference),
                   "--k", "1", "--out", str(tmp_path / "p"), "--kernels", "0"])
    assert os.path.exists(tmp_path / "p.csv")
    reports.main(["--checkpoint", checkpoint_path, "--kernels", "0"])
    assert os.listdir(vit_run / "checkpoint_last_reports")


def test_a_checkpoint_names_the_timm_network_it_holds():
    network = vit()
    checkpoint = {"network": network.state_dict(), **architectures.describe(network)}
    assert checkpoint["arch"] == VIT + "_normalize" and checkpoint["image_size"] == 32
    rebuilt = architectures.from_checkpoint(checkpoint).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), network(images))
    other = architectures.select(VIT + "_normalize", 16, pretrained=False, image_size=64)
    with pytest.raises(UserError, match="--image_size 32, not .*--image_size 64"):
        architectures.load_weights(other, checkpoint, "run/checkpoint_last.pth")


def test_timm_cache_paths_name_the_models_repository():
    files = timm_models.expected_files("vit_small_patch16_224.dino")
    assert files[0].endswith(os.path.join("models--timm--vit_small_patch16_224.dino", "snapshots", "<revision>",
                                          "model.safetensors"))
