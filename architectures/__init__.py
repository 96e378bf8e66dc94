"""Embedding networks by --arch name: a backbone plus optional _frozen, _normalize, _double."""
from architectures import resnet  # noqa: F401  (fills the registry)
from architectures.embedding_network import EmbeddingNetwork
from architectures.pretrained import load_imagenet_weights
from architectures.registry import BACKBONES
from errors import UserError

SUFFIXES = ("frozen", "normalize", "double")


def names() -> list[str]:
    return list(BACKBONES)


def parse_arch(arch: str) -> tuple[str, set[str]]:
    """Split e.g. "resnet50_frozen_normalize" into ("resnet50", {"frozen", "normalize"})."""
    backbone, *suffixes = arch.split("_")
    unknown = [suffix for suffix in suffixes if suffix not in SUFFIXES]
    if backbone not in BACKBONES or unknown:
        raise ValueError(f"unknown architecture {arch!r}: use one of {', '.join(names())} "
                         f"followed by any of {', '.join('_' + s for s in SUFFIXES)}")
    return backbone, set(suffixes)


def select(arch: str, embed_dim: int, pretrained: bool = True,
           pretrained_weights: str | None = None) -> EmbeddingNetwork:
    name, suffixes = parse_arch(arch)
    if pretrained_weights is not None and not pretrained:
        raise UserError("--pretrained_weights and --not_pretrained contradict each other; drop one")
    backbone = BACKBONES[name]
    network = backbone.build()
    if pretrained:
        load_imagenet_weights(network, backbone, name, pretrained_weights)
    return EmbeddingNetwork(network, arch, embed_dim, frozen="frozen" in suffixes,
                            normalize="normalize" in suffixes, double_pool="double" in suffixes)
