"""Embedding networks from checkpoint files, in either of two formats:

- this codebase's: a dict with "network" (the state dict), "arch", "embed_dim" and "config";
- the paper's published net.pth files: a bare state dict of a module holding the ResNet under
  `model.` in pretrainedmodels naming (`model.conv1.weight` ... `model.last_linear.weight/bias`),
  plus duplicate entries `layer_blocks.0..3.*` aliasing layer1..layer4, which are dropped.

Files are read with torch.load(weights_only=True); every problem is a one-line UserError.
"""
from dataclasses import dataclass, field

import torch

import architectures
import checkpoints
import datasets
from architectures.embedding_network import EmbeddingNetwork
from datasets.transforms import Preprocessing
from errors import UserError

PAPER_ARCH = "resnet50_frozen_normalize"
ALIAS_PREFIX = "layer_blocks."
HEAD_WEIGHT = "model.last_linear.weight"
UNREADABLE_SUFFIXES = "whether it was trained with _normalize or _double cannot be read from the weights"


@dataclass
class Checkpoint:
    network: EmbeddingNetwork
    arch: str
    embed_dim: int
    kind: str  # "codebase" or "paper"
    config: dict = field(default_factory=dict)  # the training run's flags (codebase format only)
    epoch: int | None = None  # the epoch it was saved after (codebase format only)


def load(path, arch=None, embed_dim=None):
    """The network stored at `path`. For the paper's format `arch` defaults to PAPER_ARCH and
    `embed_dim` to the file's; this codebase's files record both (and the head), and flags that
    contradict them are an error."""
    content = checkpoints.read(path)
    if isinstance(content.get("network"), dict):
        for flag, given in (("arch", arch), ("embed_dim", embed_dim)):
            if given is not None and content.get(flag) is not None and given != content[flag]:
                raise UserError(f"{path} holds a network with arch {content.get('arch')} and embed_dim "
                                f"{content.get('embed_dim')}, not --{flag} {given}; drop --{flag} or change it")
        network = architectures.from_checkpoint(content, path)
        return Checkpoint(network.eval(), network.arch, network.embed_dim, "codebase", content.get("config") or {},
                          content.get("epoch"))
    state = _paper_state(content)
    arch = arch or PAPER_ARCH
    embed_dim = embed_dim or _stored_embed_dim(state)
    if embed_dim is None:
        raise UserError(f"{path} has no {HEAD_WEIGHT} to read embed_dim from; pass --embed_dim")
    try:
        network = architectures.select(arch, int(embed_dim), pretrained=False)
    except ValueError as error:
        raise UserError(str(error)) from None
    _load_state(network, state, path)
    return Checkpoint(network.eval(), arch, int(embed_dim), "paper")


def load_into(network, path, source):
    """Copy the weights of the checkpoint at `path`, in either format, into `network` (--init_from).

    The file must hold this very network: for this codebase's files the recorded arch, head and
    embed_dim must match, for the paper's the weights must fit. `source` names the file in errors."""
    try:
        content = checkpoints.read(path)
    except UserError as error:
        raise UserError(f"{source}: {error}; give a checkpoint written by main.py or a published net.pth") from None
    if isinstance(content.get("network"), dict):
        architectures.load_weights(network, content, source)
    else:
        _load_state(network, _paper_state(content), source)


def _paper_state(content):
    """A published state dict without its DataParallel prefix and its layer_blocks aliases."""
    state = {key.removeprefix("module."): value for key, value in content.items()}
    return {key: value for key, value in state.items() if not key.startswith(ALIAS_PREFIX)}


def _stored_embed_dim(state):
    weight = state.get(HEAD_WEIGHT)
    return int(weight.shape[0]) if torch.is_tensor(weight) and weight.dim() == 2 else None


def _load_state(network, state, path):
    expected = network.state_dict()
    missing = [key for key in expected if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [key for key in state if key in expected and
                   (not torch.is_tensor(state[key]) or state[key].shape != expected[key].shape)]
    if missing or unexpected or wrong_shape:
        example = (missing or unexpected or wrong_shape)[0]
        raise UserError(f"{path} does not fit --arch {network.arch} --embed_dim {network.embed_dim} "
                        f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong_shape)} wrong-shape "
                        f"keys, e.g. {example}): it holds {describe(state)}")
    # strict=False: files from before PyTorch 0.4 lack num_batches_tracked, BatchNorm fills it in.
    network.load_state_dict(state, strict=False)


def describe(state):
    """What a state dict holds, as far as the weights tell: backbone and embed_dim."""
    embed_dim = _stored_embed_dim(state)
    shapes = {key: tuple(value.shape) for key, value in state.items() if torch.is_tensor(value)}
    for name in architectures.names():
        backbone = architectures.BACKBONES[name]
        reference = {f"model.{key}": tuple(value.shape) for key, value in backbone.build().state_dict().items()
                     if not key.startswith(f"{backbone.classifier}.") and not key.endswith("num_batches_tracked")}
        if all(shapes.get(key) == shape for key, shape in reference.items()):
            return f"a {name} with embed_dim {embed_dim} ({UNREADABLE_SUFFIXES})"
    return f"a network this codebase does not build (embed_dim {embed_dim}, first key {next(iter(state), None)})"


def input_preprocessing(checkpoint) -> dict:
    """The input the network was trained on, as keyword arguments of datasets.select and
    datasets.load, which add what the dataset fixes (datasets.dataset_preprocessing): the backbone's
    (BN-Inception's BGR 0-255, a timm model's mean, std, size and interpolation) at the image size
    of its run."""
    image_size = checkpoint.config.get("image_size")
    return {**architectures.preprocessing(checkpoint.arch, image_size), "image_size": image_size}


def evaluation_preprocessing(checkpoint):
    """The Preprocessing values of the network's evaluation input: its backbone's, with the
    overrides of the dataset it was trained on (e.g. digits' small crops)."""
    given = input_preprocessing(checkpoint)
    backbone = Preprocessing(**{key: value for key, value in given.items() if key in Preprocessing.__dataclass_fields__})
    dataset = checkpoint.config.get("dataset")
    return datasets.dataset_preprocessing(dataset, backbone, given["image_size"]) if dataset in datasets.LOADERS \
        else backbone


def evaluation_transform(checkpoint):
    """The evaluation preprocessing of the network (evaluation_preprocessing) as a transform."""
    return evaluation_preprocessing(checkpoint).evaluation(checkpoint.config.get("augmentation", "base"))
