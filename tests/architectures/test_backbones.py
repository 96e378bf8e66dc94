"""Every backbone with every suffix, every head, input preprocessing, ImageNet weights files,
head-only epochs and checkpoints that say which network they hold.

Networks run on 64-pixel images (every backbone pools adaptively, and all of them still leave a
2x2 feature map there, so average and max pooling differ); the ImageNet input size itself is
checked once per backbone, without gradients.
"""
import copy
import json
import pickle

import numpy as np
import pretrainedmodels
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import architectures
import datasets
import parameters
from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from errors import UserError
from tests import program

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE_SIZE = 64
EMBED_DIM = 16
SUFFIX_CASES = ("", "_frozen", "_normalize", "_double")




def images(batch=2, size=IMAGE_SIZE, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def backbone_batch_norms(network):
    return [module for module in network.model.modules() if isinstance(module, nn.BatchNorm2d)]


def train_steps(network, steps=1):
    network.train()
    optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=0.1)
    # A loss that depends on the embeddings' direction, so that it also trains normalised ones.
    direction = torch.randn(EMBED_DIM, generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        optimizer.zero_grad()
        (network(images()) @ direction).sum().backward()
        optimizer.step()


def recording_feature_maps(network):
    """Keep the feature maps the network's forward computes, to check its pooling against them."""
    maps, feature_map = [], network.feature_map

    def recorded(batch):
        maps.append(feature_map(batch))
        return maps[-1]

    network.feature_map = recorded
    return maps


def statistics(network):
    return {name: value.clone() for name, value in network.state_dict().items()
            if "running_" in name or "num_batches_tracked" in name}


@pytest.mark.parametrize("suffix", SUFFIX_CASES)
@pytest.mark.parametrize("backbone", architectures.names())
def test_every_backbone_with_every_suffix(backbone, suffix):
    network = architectures.select(backbone + suffix, EMBED_DIM, pretrained=False)
    assert (network.frozen, network.normalize, network.double_pool) == (
        suffix == "_frozen", suffix == "_normalize", suffix == "_double")
    assert not any(".fc." in key or "aux" in key for key in network.state_dict())
    if suffix == "_frozen":
        before = statistics(network)
        train_steps(network)
        batch_norms = backbone_batch_norms(network)
        assert batch_norms and not any(bn.training for bn in batch_norms)
        assert statistics(network).keys() == before.keys()
        for name, value in statistics(network).items():
            assert torch.equal(value, before[name]), name
        # The affine weights still train. (Compared by gradient: in a randomly initialised GoogLeNet
        # with fixed statistics the signal is too small for one step to move a weight of 1.)
        assert all(bn.weight.grad is not None for bn in batch_norms)
        assert any(bn.weight.grad.abs().sum() > 0 for bn in batch_norms)
        return
    network.eval()
    maps = recording_feature_maps(network)
    with torch.no_grad():
        embeddings = network(images())
        feature_map = maps[0]
        assert feature_map.shape[-2:] == (2, 2)
        pooled = feature_map.mean(dim=(2, 3)) + (feature_map.amax(dim=(2, 3)) if suffix == "_double" else 0)
        expected = network.model.last_linear(pooled)
    assert embeddings.shape == (2, EMBED_DIM)
    if suffix == "_normalize":
        assert torch.allclose(embeddings.norm(dim=1), torch.ones(2), atol=1e-5)
        expected = nn.functional.normalize(expected, dim=1)
    assert torch.allclose(embeddings, expected, atol=1e-5)


@pytest.mark.parametrize("head", list(architectures.HEADS))
def test_every_head_embeds_and_trains(head):
    network = architectures.select("resnet18_frozen_normalize", EMBED_DIM, pretrained=False, head=head)
    assert architectures.describe(network) == {"arch": "resnet18_frozen_normalize", "head": head,
                                               "embed_dim": EMBED_DIM, "pooling": "auto", "image_size": None}
    head_parameters, backbone_parameters = network.head_parameters(), network.backbone_parameters()
    assert len(head_parameters) + len(backbone_parameters) == len(list(network.parameters()))
    assert not {id(p) for p in head_parameters} & {id(p) for p in backbone_parameters}
    assert {id(network.model.last_linear.weight), id(network.model.last_linear.bias)} <= {id(p) for p in
                                                                                           head_parameters}
    before = copy.deepcopy(network.state_dict())
    # Two steps: the skip head's zero-initialised last layer passes no gradient to the first one before.
    # Every head parameter gets a gradient in the second. (Its value may not move: on an untrained backbone
    # the features are huge, the normalised embedding's gradient tiny, and a bias step can fall below
    # float32's resolution of the bias.)
    train_steps(network, steps=2)
    assert all(p.grad is not None and bool(p.grad.any()) for p in head_parameters)
    assert not torch.equal(network.model.last_linear.weight, before["model.last_linear.weight"])
    assert torch.equal(network.model.bn1.running_mean, before["model.bn1.running_mean"])
    network.eval()
    with torch.no_grad():
        embeddings = network(images())
    assert embeddings.shape == (2, EMBED_DIM)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2), atol=1e-5)


def test_the_heads_are_what_their_names_say():
    layers = {head: architectures.select("resnet18", EMBED_DIM, pretrained=False, head=head)
              for head in architectures.HEADS}
    assert set(layers["linear"].state_dict()) == {f"model.{key}" for key in torchvision.models.resnet18().state_dict()
                                                  if not key.startswith("fc.")} | {
        "model.last_linear.weight", "model.last_linear.bias"}
    assert isinstance(layers["bn1d"].after_projection, nn.BatchNorm1d)
    assert sum(isinstance(m, nn.Linear) for m in layers["mlp"].modules()) == 2
    # The skip head's residual block starts at zero: at first it embeds like the linear head.
    skip = layers["skip"].eval()
    with torch.no_grad():
        batch = images()
        pooled = skip.feature_map(batch).mean(dim=(2, 3))
        assert torch.allclose(skip(batch), skip.model.last_linear(pooled), atol=1e-6)
        assert not torch.allclose(skip(batch), skip.model.last_linear(skip.before_projection.mlp[0](pooled)))


def test_frozen_leaves_the_heads_batchnorm1d_training():
    network = architectures.select("resnet18_frozen", EMBED_DIM, pretrained=False, head="bn1d")
    train_steps(network)
    assert network.after_projection.training
    assert network.after_projection.num_batches_tracked == 1


def test_unknown_head_lists_the_heads():
    with pytest.raises(ValueError, match="linear, bn1d, mlp, skip"):
        architectures.select("resnet18", EMBED_DIM, pretrained=False, head="mpl")


@pytest.mark.parametrize("arch, expected", [
    ("se_resnext50", ("se_resnext50", set())),
    ("se_resnext50_frozen_double", ("se_resnext50", {"frozen", "double"})),
    ("bninception_frozen_normalize", ("bninception", {"frozen", "normalize"})),
    ("resnet101_normalize", ("resnet101", {"normalize"})),
])
def test_parse_arch_with_underscores_in_the_backbone_name(arch, expected):
    assert architectures.parse_arch(arch) == expected


@pytest.mark.parametrize("arch", ["se_resnext", "resnext50", "se_resnext50_", "bninception_frozn", "googlenet50"])
def test_unknown_arch(arch):
    with pytest.raises(ValueError, match="se_resnext50"):
        architectures.parse_arch(arch)


def test_set_backbone_trainable_trains_only_the_head_while_off():
    network = architectures.select("resnet18", EMBED_DIM, pretrained=False, head="bn1d")
    network.set_backbone_trainable(False)
    network = copy.deepcopy(network)
    network.eval()
    network.train()
    assert not any(bn.training for bn in backbone_batch_norms(network)) and network.after_projection.training
    assert not any(p.requires_grad for p in network.backbone_parameters())
    assert all(p.requires_grad for p in network.head_parameters())
    before = copy.deepcopy(network.state_dict())
    train_steps(network)
    for name, value in network.state_dict().items():
        if name.startswith("model.") and not name.startswith("model.last_linear."):
            assert torch.equal(value, before[name]), name
    assert not torch.equal(network.model.last_linear.weight, before["model.last_linear.weight"])
    assert not torch.equal(network.after_projection.running_mean, before["after_projection.running_mean"])

    network.set_backbone_trainable(True)
    assert network.training and all(bn.training for bn in backbone_batch_norms(network))
    train_steps(network)
    assert not torch.equal(network.model.conv1.weight, before["model.conv1.weight"])
    assert not torch.equal(network.model.bn1.running_mean, before["model.bn1.running_mean"])


def test_set_backbone_trainable_keeps_frozen_batchnorm_frozen():
    network = architectures.select("resnet18_frozen", EMBED_DIM, pretrained=False)
    network.set_backbone_trainable(False)
    network.set_backbone_trainable(True)
    network.train()
    assert not any(bn.training for bn in backbone_batch_norms(network))


# ---------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("backbone", architectures.names())
def test_preprocessing_of_each_backbone(backbone):
    expected = {"crop_size": 224, "resize_size": 256, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                "channel_order": "RGB", "input_range": 1.0, "interpolation": "bilinear"}
    if backbone == "bninception":
        expected.update(mean=(104, 117, 128), std=(1, 1, 1), channel_order="BGR", input_range=255.0)
    elif backbone == "googlenet":
        expected.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert architectures.preprocessing(backbone + "_frozen_normalize") == expected
    Preprocessing(**expected)  # every key is a Preprocessing field


def test_bninception_inputs_are_bgr_on_a_0_255_scale():
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    bgr = Preprocessing(**architectures.preprocessing("bninception")).evaluation("base")(image)
    rgb_unit = Preprocessing(mean=(0, 0, 0), std=(1, 1, 1)).evaluation("base")(image)
    expected = rgb_unit.flip(0) * 255 - torch.tensor([104.0, 117.0, 128.0])[:, None, None]
    assert bgr.shape == (3, 224, 224)
    assert torch.allclose(bgr, expected, atol=1e-3)
    assert torch.allclose(bgr[:, 0, 0], torch.tensor(pixels[16, 16, ::-1].astype(np.float32)) -
                          torch.tensor([104.0, 117.0, 128.0]), atol=1e-3)


def test_bgr_transform_survives_pickling_for_dataloader_workers():
    transform = Preprocessing(**architectures.preprocessing("bninception")).training("base")
    pickle.loads(pickle.dumps(transform))


def test_googlenet_preprocessing_is_torchvisions_transform_input():
    """torchvision's ImageNet GoogLeNet rescales ImageNet-normalised inputs to [-1, 1] (transform_input);
    mean = std = 0.5 gives the weights the same input."""
    pixels = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    imagenet = (pixels - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    transformed = torchvision.models.googlenet(aux_logits=False, transform_input=True,
                                               init_weights=False)._transform_input(imagenet)
    assert torch.allclose(transformed, (pixels - 0.5) / 0.5, atol=1e-6)


def test_unknown_channel_order():
    with pytest.raises(ValueError, match="RGB, BGR"):
        Preprocessing(channel_order="GBR")


# ---------------------------------------------------------------- ImageNet weights




IMAGENET_NETWORKS = {
    "bninception": (lambda: pretrainedmodels.bninception(pretrained=None), "bn_inception-52deb4733.pth",
                    "conv1_7x7_s2.weight"),
    "se_resnext50": (lambda: pretrainedmodels.se_resnext50_32x4d(pretrained=None), "se_resnext50_32x4d-a260b3a4.pth",
                     "layer0.conv1.weight"),
    # As torchvision publishes it: with the auxiliary classifiers the backbone leaves out.
    "googlenet": (lambda: torchvision.models.googlenet(aux_logits=True, init_weights=False),
                  "googlenet-1378be20.pth", "conv1.conv.weight"),
    "resnet34": (torchvision.models.resnet34, "resnet34-b627a593.pth", "conv1.weight"),
}


@pytest.mark.parametrize("backbone", IMAGENET_NETWORKS)
def test_imagenet_weights_from_the_hub_cache(offline, backbone):
    build, file_name, first_key = IMAGENET_NETWORKS[backbone]
    state = build().state_dict()
    torch.save(state, offline / file_name)
    network = architectures.select(backbone + "_frozen", EMBED_DIM)
    assert torch.equal(network.model.state_dict()[first_key], state[first_key])
    running = [key for key in network.model.state_dict() if key.endswith("running_var")][-1]
    assert torch.equal(network.model.state_dict()[running], state[running])


EXPECTED_FILES = {"bninception": "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth",
                  "se_resnext50": "http://data.lip6.fr/cadene/pretrainedmodels/se_resnext50_32x4d-a260b3a4.pth",
                  "googlenet": "https://download.pytorch.org/models/googlenet-1378be20.pth",
                  "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
                  "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
                  "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
                  "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth"}


@pytest.mark.parametrize("backbone", architectures.names())
def test_missing_weights_offline_name_the_file_and_the_fix(offline, backbone):
    with pytest.raises(UserError) as error:
        architectures.select(backbone + "_frozen_normalize", EMBED_DIM)
    message = str(error.value)
    url = EXPECTED_FILES[backbone]
    for needed in (url, str(offline / url.rsplit("/", 1)[1]), "--pretrained_weights PATH", "--not_pretrained"):
        assert needed in message
    assert "\n" not in message


def test_weights_of_another_backbone_name_the_library(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(UserError, match="not a state dict of a pretrainedmodels se_resnext50") as error:
        architectures.select("se_resnext50", EMBED_DIM, pretrained_weights=str(path))
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- checkpoints


def checkpoint_of(network):
    return {"network": network.state_dict(), **architectures.describe(network), "epoch": 1}


def test_from_checkpoint_builds_the_network_it_describes():
    network = architectures.select("resnet18_frozen_normalize_double", EMBED_DIM, pretrained=False, head="bn1d")
    train_steps(network)
    rebuilt = architectures.from_checkpoint(checkpoint_of(network), "run/checkpoint_last.pth")
    assert architectures.describe(rebuilt) == architectures.describe(network)
    network.eval()
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(images()), network(images()))


def test_checkpoints_from_before_heads_are_linear():
    network = architectures.select("resnet18_normalize", EMBED_DIM, pretrained=False)
    checkpoint = checkpoint_of(network)
    del checkpoint["head"]
    assert architectures.from_checkpoint(checkpoint).head == "linear"


def test_loading_into_another_network_names_what_the_file_holds():
    checkpoint = checkpoint_of(architectures.select("resnet18", EMBED_DIM, pretrained=False, head="mlp"))
    network = architectures.select("resnet18", EMBED_DIM, pretrained=False)
    with pytest.raises(UserError) as error:
        architectures.load_weights(network, checkpoint, "run/checkpoint_last.pth")
    message = str(error.value)
    assert "run/checkpoint_last.pth holds --arch resnet18 --head mlp --embed_dim 16, not --arch resnet18 " \
           "--head linear --embed_dim 16" in message and "\n" not in message


def test_weights_that_do_not_fit_their_description_are_a_user_error():
    checkpoint = checkpoint_of(architectures.select("resnet18", 32, pretrained=False, head="skip"))
    checkpoint.update(head="linear", embed_dim=EMBED_DIM)
    with pytest.raises(UserError) as error:
        architectures.from_checkpoint(checkpoint, "net.pth")
    message = str(error.value)
    assert "net.pth says it holds --arch resnet18 --head linear --embed_dim 16" in message
    assert "they hold a skip head with embed_dim 32" in message and "\n" not in message


@pytest.mark.parametrize("checkpoint, fragment", [
    ({"network": {}}, "does not record its arch and embed_dim"),
    ({"network": {}, "arch": "vgg16", "embed_dim": 16}, "does not build: unknown architecture 'vgg16'"),
    ({"network": {}, "arch": "resnet18", "embed_dim": 16, "head": "mpl"}, "unknown head 'mpl'"),
])
def test_checkpoints_this_codebase_cannot_build(checkpoint, fragment):
    with pytest.raises(UserError, match=fragment):
        architectures.from_checkpoint(checkpoint, "net.pth")


# ---------------------------------------------------------------- command line and end to end


def test_head_and_freeze_flags():
    settings = parameters.parse(["--arch", "se_resnext50_frozen", "--head", "skip", "--freeze_backbone_epochs", "3"])
    assert (settings.model.arch, settings.model.head, settings.training.freeze_backbone_epochs) == \
        ("se_resnext50_frozen", "skip", 3)
    assert parameters.parse([]).model.head == "linear" and parameters.parse([]).training.freeze_backbone_epochs == 0
    with pytest.raises(SystemExit):
        parameters.parse(["--head", "mpl"])


DIGITS = ["--dataset", "digits", "--not_pretrained", "--embed_dim", "16", "--bs", "50", "--samples_per_class", "10",
          "--kernels", "0", "--n_epochs", "1", "--no_reports"]


@pytest.mark.slow
@pytest.mark.parametrize("network_flags", [["--arch", "bninception_frozen_normalize"],
                                           ["--arch", "resnet18_normalize", "--head", "bn1d",
                                            "--freeze_backbone_epochs", "1"]])
def test_one_digits_epoch(tmp_path, network_flags, monkeypatch):
    argv = DIGITS + network_flags + ["--save_path", str(tmp_path), "--savename", "run"]
    settings = parameters.parse(argv)
    select_datasets, selected = datasets.select, {}
    monkeypatch.setattr(datasets, "select", lambda *args, **kwargs: selected.setdefault(
        "splits", select_datasets(*args, **kwargs)))
    assert program.run_main(argv) == 0
    # The architecture's preprocessing reached the dataset: BN-Inception sees mean-subtracted 0-255 pixels.
    test_image = selected["splits"]["test"][0][0]
    assert test_image.shape == (3, 32, 32)
    assert (test_image.abs().max() > 50) == settings.model.arch.startswith("bninception")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0 <= summary["final"]["test"]["e_recall@1"] <= 1
    checkpoint = torch.load(tmp_path / "run" / "checkpoint_last.pth", weights_only=True)
    network = architectures.from_checkpoint(checkpoint)
    assert architectures.describe(network) == {"arch": settings.model.arch, "head": settings.model.head,
                                               "embed_dim": 16, "pooling": "auto", "image_size": None}
    if settings.training.freeze_backbone_epochs:
        # Only the head trained: the backbone's BatchNorm statistics are still those of a new layer.
        assert network.model.bn1.num_batches_tracked == 0 and torch.all(network.model.bn1.running_var == 1)
        assert network.after_projection.num_batches_tracked > 0


@pytest.mark.parametrize("backbone", architectures.names())
def test_every_backbone_at_its_imagenet_input_size(backbone):
    network = architectures.select(backbone + "_double", EMBED_DIM, pretrained=False).eval()
    size = architectures.preprocessing(backbone)["crop_size"]
    with torch.no_grad():
        assert network(images(batch=1, size=size)).shape == (1, EMBED_DIM)
