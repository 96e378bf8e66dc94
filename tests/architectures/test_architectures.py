import copy
import itertools
import socket

import pytest
import torch
import torchvision
from torch import nn

import architectures
from errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE_SIZE = 64
EMBED_DIM = 16


def images(batch=4, seed=0):
    return torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def all_suffix_combinations():
    for count in range(len(architectures.SUFFIXES) + 1):
        yield from itertools.combinations(architectures.SUFFIXES, count)


def batch_norms(network):
    return [module for module in network.modules() if isinstance(module, nn.BatchNorm2d)]


def train_one_step(network):
    network.train()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    embeddings = network(images())
    (embeddings ** 2).sum().backward()
    optimizer.step()




def test_names_come_from_the_registry():
    assert architectures.names() == ["bninception", "googlenet", "resnet18", "resnet34", "resnet50", "resnet101",
                                     "se_resnext50"]


@pytest.mark.parametrize("suffixes", list(all_suffix_combinations()))
def test_every_suffix_combination_embeds_resnet18(suffixes):
    network = architectures.select("_".join(("resnet18",) + suffixes), EMBED_DIM, pretrained=False)
    network.eval()
    with torch.no_grad():
        embeddings = network(images())
    assert embeddings.shape == (4, EMBED_DIM)
    assert (network.frozen, network.normalize, network.double_pool) == tuple(
        suffix in suffixes for suffix in ("frozen", "normalize", "double"))
    if "normalize" in suffixes:
        assert torch.allclose(embeddings.norm(dim=1), torch.ones(4), atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet50", "resnet50_frozen_normalize_double"])
def test_resnet50_shape_and_checkpoint_key_names(arch):
    network = architectures.select(arch, 128, pretrained=False)
    network.eval()
    with torch.no_grad():
        assert network(images(batch=2)).shape == (2, 128)
    state = network.state_dict()
    assert state["model.last_linear.weight"].shape == (128, 2048)
    assert state["model.last_linear.bias"].shape == (128,)
    assert {"model.conv1.weight", "model.bn1.weight", "model.layer4.2.conv3.weight"} <= set(state)
    assert not any(".fc." in key for key in state)


def test_parse_arch():
    assert architectures.parse_arch("resnet50_frozen_normalize") == ("resnet50", {"frozen", "normalize"})
    assert architectures.parse_arch("resnet18") == ("resnet18", set())


@pytest.mark.parametrize("arch", ["vgg16", "resnet50_frozn", "resnet50_", "resnet50_frozen_bogus"])
def test_parse_arch_errors_list_the_valid_names(arch):
    with pytest.raises(ValueError) as error:
        architectures.parse_arch(arch)
    for name in architectures.names() + list(architectures.SUFFIXES):
        assert name in str(error.value)


def test_frozen_keeps_batchnorm_statistics_but_trains_its_weights():
    network = architectures.select("resnet18_frozen", EMBED_DIM, pretrained=False)
    before = copy.deepcopy(network.state_dict())
    train_one_step(network)
    assert network.training
    for name, value in network.state_dict().items():
        if "running_" in name or "num_batches_tracked" in name:
            assert torch.equal(value, before[name]), name
    assert not torch.equal(network.model.bn1.weight, before["model.bn1.weight"])
    assert not torch.equal(network.model.layer1[0].bn1.weight, before["model.layer1.0.bn1.weight"])


def test_without_frozen_batchnorm_statistics_change():
    network = architectures.select("resnet18", EMBED_DIM, pretrained=False)
    before = copy.deepcopy(network.state_dict())
    train_one_step(network)
    assert not torch.equal(network.model.bn1.running_mean, before["model.bn1.running_mean"])
    assert not torch.equal(network.model.layer4[1].bn2.running_var, before["model.layer4.1.bn2.running_var"])


def test_frozen_survives_deepcopy_and_train_eval_cycles():
    network = copy.deepcopy(architectures.select("resnet18_frozen", EMBED_DIM, pretrained=False))
    network.eval()
    network.train()
    assert network.training
    assert all(not module.training for module in batch_norms(network))
    assert network.model.layer1.training
    before = copy.deepcopy(network.state_dict())
    train_one_step(network)
    assert torch.equal(network.model.bn1.running_mean, before["model.bn1.running_mean"])


def test_double_pool_sums_average_and_max_pool():
    network = architectures.select("resnet18_double", EMBED_DIM, pretrained=False)
    network.eval()
    batch = images()
    with torch.no_grad():
        resnet = network.model
        x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(batch))))
        x = resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))
        pooled = x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))
        assert torch.allclose(network(batch), resnet.last_linear(pooled), atol=1e-5)


def test_head_and_backbone_parameters_split_all_parameters():
    network = architectures.select("resnet18", EMBED_DIM, pretrained=False)
    head = network.head_parameters()
    backbone = network.backbone_parameters()
    assert {id(p) for p in head} == {id(network.model.last_linear.weight), id(network.model.last_linear.bias)}
    assert len(head) + len(backbone) == len(list(network.parameters()))
    assert not {id(p) for p in head} & {id(p) for p in backbone}


def save_random_resnet18(path, nest=False):
    state = torchvision.models.resnet18().state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state} if nest else state, path)
    return state


@pytest.mark.parametrize("file_name", ["resnet18-f37072fd.pth", "resnet18-5c106cde.pth"])
def test_weights_from_the_hub_cache_are_used(offline, file_name):
    state = save_random_resnet18(offline / file_name)
    network = architectures.select("resnet18_frozen", EMBED_DIM)
    assert torch.equal(network.model.conv1.weight, state["conv1.weight"])
    assert torch.equal(network.model.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


@pytest.mark.parametrize("nest", [False, True])
def test_pretrained_weights_path_is_used(offline, tmp_path, nest):
    state = save_random_resnet18(tmp_path / "mine.pth", nest=nest)
    network = architectures.select("resnet18", EMBED_DIM, pretrained_weights=str(tmp_path / "mine.pth"))
    assert torch.equal(network.model.conv1.weight, state["conv1.weight"])


def test_missing_pretrained_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        architectures.select("resnet18", EMBED_DIM, pretrained_weights=str(tmp_path / "absent.pth"))


def test_pretrained_weights_with_not_pretrained_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--not_pretrained"):
        architectures.select("resnet18", EMBED_DIM, pretrained=False, pretrained_weights=str(tmp_path / "x.pth"))


@pytest.mark.parametrize("content", ["not a state dict", "wrong backbone", "garbage bytes"])
def test_a_file_that_is_not_the_backbones_state_dict_is_a_user_error(tmp_path, content):
    path = tmp_path / "weights.pth"
    if content == "not a state dict":
        torch.save(torch.zeros(3), path)
    elif content == "wrong backbone":
        torch.save(torchvision.models.resnet34().state_dict(), path)
    else:
        path.write_bytes(b"\x00\x01 definitely not a checkpoint")
    with pytest.raises(UserError, match="not a state dict of a torchvision resnet18") as error:
        architectures.select("resnet18", EMBED_DIM, pretrained_weights=str(path))
    assert "\n" not in str(error.value)


def test_missing_weights_offline_fail_fast_with_the_fix(offline, monkeypatch):
    attempts = []

    def unreachable(*args, **kwargs):
        attempts.append(args)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(UserError) as error:
        architectures.select("resnet50_frozen_normalize", 128)
    assert len(attempts) <= 1  # fast: no retries (counted, not timed, so that a busy machine does not fail it)
    message = str(error.value)
    for needed in ("resnet50-0676ba61.pth", str(offline), "https://download.pytorch.org/models/",
                   "--pretrained_weights PATH", "--not_pretrained"):
        assert needed in message
    assert "\n" not in message


def test_not_pretrained_touches_no_file(offline, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("pretrained=False must not read weights")

    monkeypatch.setattr(torch, "load", no_loading)
    architectures.select("resnet18", EMBED_DIM, pretrained=False)
