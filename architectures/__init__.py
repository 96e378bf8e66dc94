"""Embedding networks by --arch name: a backbone plus any of _frozen, _normalize, _double, and a --head."""
from architectures import googlenet, pretrainedmodels_zoo, resnet  # noqa: F401  (fill the registry)
from architectures.checkpoint import describe, load_weights, recorded
from architectures.embedding_network import EmbeddingNetwork
from architectures.heads import HEADS
from architectures.pretrained import load_imagenet_weights
from architectures.registry import BACKBONES
from errors import UserError

SUFFIXES = ("frozen", "normalize", "double")

__all__ = ["BACKBONES", "HEADS", "SUFFIXES", "EmbeddingNetwork", "describe", "from_checkpoint", "load_weights",
           "names", "parse_arch", "preprocessing", "select"]


def names() -> list[str]:
    """Backbone names in natural order: resnet18 before resnet101."""
    return BACKBONES.names()


def parse_arch(arch: str) -> tuple[str, set[str]]:
    """Split e.g. "se_resnext50_frozen_normalize" into ("se_resnext50", {"frozen", "normalize"})."""
    backbone = max((name for name in BACKBONES if arch == name or arch.startswith(f"{name}_")), key=len, default=None)
    suffixes = arch[len(backbone) + 1:].split("_") if backbone is not None and arch != backbone else []
    unknown = [suffix for suffix in suffixes if suffix not in SUFFIXES]
    if backbone is None or unknown:
        raise ValueError(f"unknown architecture {arch!r}: use one of {', '.join(names())} "
                         f"followed by any of {', '.join('_' + s for s in SUFFIXES)}")
    return backbone, set(suffixes)


def preprocessing(arch: str) -> dict:
    """The input the backbone's ImageNet weights expect, as keyword arguments of datasets.select:
    crop_size, resize_size, mean, std, channel_order ("RGB" or "BGR") and input_range (1 or 255)."""
    return dict(BACKBONES[parse_arch(arch)[0]].preprocessing)


def select(arch: str, embed_dim: int, pretrained: bool = True, pretrained_weights: str | None = None,
           head: str = "linear") -> EmbeddingNetwork:
    name, suffixes = parse_arch(arch)
    if pretrained_weights is not None and not pretrained:
        raise UserError("--pretrained_weights and --not_pretrained contradict each other; drop one")
    backbone = BACKBONES[name]
    network = backbone.build()
    if pretrained:
        load_imagenet_weights(network, backbone, name, pretrained_weights)
    return EmbeddingNetwork(backbone, network, arch, embed_dim, head=head, frozen="frozen" in suffixes,
                            normalize="normalize" in suffixes, double_pool="double" in suffixes)


def from_checkpoint(checkpoint: dict, source: str = "the checkpoint") -> EmbeddingNetwork:
    """The network a checkpoint of this codebase describes (arch, head, embed_dim), with its weights."""
    description = recorded(checkpoint)
    if description["arch"] is None or description["embed_dim"] is None:
        raise UserError(f"{source} does not record its arch and embed_dim; it was not written by this codebase's "
                        "main.py")
    try:
        network = select(description["arch"], int(description["embed_dim"]), pretrained=False,
                         head=description["head"])
    except ValueError as error:
        raise UserError(f"{source} holds a network this codebase does not build: {error}") from None
    load_weights(network, checkpoint, source)
    return network
