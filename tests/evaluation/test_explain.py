"""evaluation.explain: similarity heat maps of a query and a retrieved image, and their command."""
import numpy as np
import pytest
import torch
from PIL import Image

import architectures
from evaluation import explain, networks
from tests.images import write_class_tree


def resnet():
    torch.manual_seed(0)
    return architectures.select("resnet18", 8, pretrained=False).eval()


def test_the_maps_of_an_average_pooling_linear_head_decompose_the_similarity():
    network = resnet()
    query, retrieved = torch.randn(3, 64, 64), torch.randn(3, 64, 64)
    map_q, map_r, similarity = explain.contributions(network, query, retrieved)
    assert map_q.shape == map_r.shape == (2, 2)
    # float64 reference: e = W mean(A) + b, so each map sums to s minus the bias's share <b, e_other>
    with torch.no_grad():
        features = network.feature_map(torch.stack([query, retrieved])).double()
    weight, bias = (p.detach().double() for p in (network.model.last_linear.weight, network.model.last_linear.bias))
    embeddings = features.mean(dim=(2, 3)) @ weight.T + bias
    s = float(embeddings[0] @ embeddings[1])
    assert similarity == pytest.approx(s, rel=1e-5)
    assert float(map_q.double().sum()) + float(bias @ embeddings[1]) == pytest.approx(s, rel=1e-4)
    assert float(map_r.double().sum()) + float(bias @ embeddings[0]) == pytest.approx(s, rel=1e-4)
    # each position's share: its activations against the other's embedding through the projection
    positions = torch.einsum("chw,c->hw", features[0], weight.T @ embeddings[1]) / 4
    np.testing.assert_allclose(map_q.double().numpy(), positions.numpy(), rtol=1e-4, atol=1e-6)


def test_the_forward_pass_is_feature_map_then_embed_features():
    torch.manual_seed(0)
    network = architectures.select("resnet18_normalize", 8, pretrained=False).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(network(images), network.embed_features(network.feature_map(images)))


def test_heat_maps_have_the_input_size_and_follow_the_matched_image():
    network = resnet()
    query, first, second = torch.randn(3, 3, 96, 80).unbind()
    map_q, map_r = explain.similarity_maps(network, query, first)
    assert map_q.shape == map_r.shape == (96, 80) and map_q.min() >= 0
    assert max(map_q.max(), map_r.max()) == pytest.approx(1)  # one scale for both
    other_q, _ = explain.similarity_maps(network, query, second)
    assert np.abs(other_q - map_q).max() > 0.01
    image = Image.new("RGB", (80, 96), "white")
    shown = explain.overlay(image, map_q)
    assert shown.size == image.size and np.asarray(shown).std() > 0


def test_a_vision_transformer_maps_its_patch_grid():
    torch.manual_seed(0)
    network = architectures.select("timm:vit_tiny_patch16_224_normalize", 8, pretrained=False, image_size=32).eval()
    query, retrieved = torch.randn(2, 3, 32, 32).unbind()
    map_q, map_r, similarity = explain.contributions(network, query, retrieved)
    assert map_q.shape == (2, 2) and torch.isfinite(map_q).all() and map_q.abs().sum() > 0
    with torch.no_grad():
        embeddings = network(torch.stack([query, retrieved]))
    assert similarity == pytest.approx(float(embeddings[0] @ embeddings[1]), abs=1e-5)
    heat_q, heat_r = explain.similarity_maps(network, query, retrieved)
    assert heat_q.shape == heat_r.shape == (32, 32) and 0 <= heat_q.min() <= heat_q.max() <= 1


@pytest.fixture(scope="module")
def checkpoint_and_images(tmp_path_factory):
    tree = write_class_tree(tmp_path_factory.mktemp("data"), ["cat", "dog"], images_per_class=2)
    network = resnet()
    path = tmp_path_factory.mktemp("run") / "checkpoint_last.pth"
    torch.save({"network": network.state_dict(), "arch": "resnet18", "embed_dim": 8, "epoch": 1,
                "config": {"dataset": "folder", "source": str(tree)}}, path)
    return path, tree / "images"


def test_the_command_writes_a_png_per_retrieved_image(checkpoint_and_images, tmp_path, capsys):
    checkpoint, images = checkpoint_and_images
    query, retrieved = images / "cat" / "img_0.jpg", [images / "cat" / "img_1.jpg", images / "dog" / "img_0.jpg"]
    explain.main(["--checkpoint", str(checkpoint), "--query", str(query), "--retrieved", *map(str, retrieved),
                  "--out", str(tmp_path / "out"), "--gpu", "0"])
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "out" / "00_img_0_img_1.png"), str(tmp_path / "out" / "01_img_0_img_0.png")]
    assert all(Image.open(path).size[0] > 500 for path in printed)
    query_overlay, retrieved_overlay, similarity = explain.explain_pair(str(checkpoint), query, retrieved[1])
    view = networks.evaluation_transform(networks.load(str(checkpoint)))(Image.open(query))
    assert query_overlay.size == retrieved_overlay.size == tuple(view.shape[:0:-1]) and np.isfinite(similarity)


@pytest.mark.parametrize("flag, make, message", [
    ("--query", lambda tmp_path: tmp_path / "missing.jpg", "no file"),
    ("--retrieved", lambda tmp_path: (tmp_path / "notes.jpg").write_text("text") and tmp_path / "notes.jpg",
     "not a readable image"),
    ("--checkpoint", lambda tmp_path: (tmp_path / "c.pth").write_text("text") and tmp_path / "c.pth", "c.pth")])
def test_bad_input_is_one_line_with_exit_status_2(checkpoint_and_images, tmp_path, capsys, flag, make, message):
    checkpoint, images = checkpoint_and_images
    argv = {"--checkpoint": str(checkpoint), "--query": str(images / "cat" / "img_0.jpg"),
            "--retrieved": str(images / "dog" / "img_0.jpg")}
    argv[flag] = str(make(tmp_path))
    with pytest.raises(SystemExit) as stop:
        explain.main([part for item in argv.items() for part in item] + ["--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and message in error and len(error.strip().splitlines()) == 1
