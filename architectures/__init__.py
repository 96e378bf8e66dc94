"""Embedding networks by --arch name: a backbone (a registered one, or timm:<model name>) plus any of
_frozen, _normalize, _double, a --head and a --pooling."""
import math
from dataclasses import dataclass

from torch.nn.modules.batchnorm import _BatchNorm

from architectures import googlenet, pretrainedmodels_zoo, resnet, timm_models  # noqa: F401  (fill the registry)
from architectures.checkpoint import describe, load_weights, recorded
from architectures.embedding_network import POOLINGS, EmbeddingNetwork
from architectures.heads import HEADS
from architectures.pretrained import load_imagenet_weights
from architectures.registry import BACKBONES, Backbone
from errors import SettingError, UserError

SUFFIXES = ("frozen", "normalize", "double")

__all__ = ["BACKBONES", "HEADS", "POOLINGS", "SUFFIXES", "EmbeddingNetwork", "ModelSettings", "backbone", "build",
           "describe", "from_checkpoint", "load_weights", "names", "parse_arch", "preprocessing", "select"]


@dataclass(frozen=True)
class ModelSettings:
    """The embedding network: `arch` (a backbone and its suffixes), the embedding size, ImageNet
    weights (from `pretrained_weights`, else the caches; none with `not_pretrained`) or the weights
    of a checkpoint (`init_from`, which the training run loads), the feature `pooling`, the input
    `image_size` (None: the backbone's) and the embedding `head`. The defaults are the paper's."""
    arch: str = "resnet50_frozen_normalize"
    embed_dim: int = 128
    not_pretrained: bool = False
    pretrained_weights: str | None = None
    pooling: str = "auto"
    image_size: int | None = None
    head: str = "linear"
    init_from: str | None = None

    def __post_init__(self):
        try:
            parse_arch(self.arch)
        except ValueError as error:
            raise SettingError(str(error), ["arch"]) from None
        HEADS.get(self.head)
        problems = []
        if self.pooling not in POOLINGS:
            problems.append((f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}", ["pooling"]))
        if self.embed_dim <= 0:
            problems.append((f"embed_dim must be positive, got {self.embed_dim}", ["embed_dim"]))
        if self.image_size is not None and self.image_size < 8:
            problems.append((f"image_size must be at least 8 pixels, got {self.image_size}", ["image_size"]))
        if self.init_from is not None and self.pretrained_weights is not None:
            problems.append(("init_from replaces the ImageNet weights of pretrained_weights; drop one of them",
                             ["init_from", "pretrained_weights"]))
        if self.pretrained_weights is not None and self.not_pretrained:
            problems.append(("pretrained_weights and not_pretrained contradict each other; drop one",
                             ["pretrained_weights", "not_pretrained"]))
        if problems:
            raise SettingError(*problems[0])

    def preprocessing(self) -> dict:
        """The input the backbone expects, as keyword arguments of datasets.load (see `preprocessing`),
        with the image size asked for, which a dataset that fixes its own crop (digits) takes too."""
        return {**preprocessing(self.arch, self.image_size), "image_size": self.image_size}


def build(settings: ModelSettings) -> "EmbeddingNetwork":
    """The network `settings` describe, with ImageNet weights unless not_pretrained or init_from
    (whose weights replace them, loaded by the caller)."""
    return select(settings.arch, settings.embed_dim, pretrained=not settings.not_pretrained and not settings.init_from,
                  pretrained_weights=settings.pretrained_weights, head=settings.head, pooling=settings.pooling,
                  image_size=settings.image_size)


def names() -> list[str]:
    """Backbone names in natural order: resnet18 before resnet101."""
    return BACKBONES.names()


def parse_arch(arch: str) -> tuple[str, set[str]]:
    """Split e.g. "se_resnext50_frozen_normalize" into ("se_resnext50", {"frozen", "normalize"}), and
    "timm:convnext_tiny_normalize" into ("timm:convnext_tiny", {"normalize"})."""
    if timm_models.is_timm(arch):
        backbone, suffixes = arch, []
        while backbone.rsplit("_", 1)[-1] in SUFFIXES:
            backbone, suffix = backbone.rsplit("_", 1)
            suffixes.insert(0, suffix)
        if backbone == timm_models.PREFIX:
            raise ValueError(f"--arch {arch} names no timm model; e.g. timm:vit_small_patch16_224.dino")
        return backbone, set(suffixes)
    backbone = max((name for name in BACKBONES if arch == name or arch.startswith(f"{name}_")), key=len, default=None)
    suffixes = arch[len(backbone) + 1:].split("_") if backbone is not None and arch != backbone else []
    unknown = [suffix for suffix in suffixes if suffix not in SUFFIXES]
    if backbone is None or unknown:
        raise ValueError(f"unknown architecture {arch!r}: use one of {', '.join(names())} or timm:<model name>, "
                         f"followed by any of {', '.join('_' + s for s in SUFFIXES)}")
    return backbone, set(suffixes)


def backbone(name: str) -> Backbone:
    """The Backbone record of a backbone name (timm:<model> included)."""
    if timm_models.is_timm(name):
        return timm_models.backbone(name.removeprefix(timm_models.PREFIX))
    return BACKBONES[name]


def preprocessing(arch: str, image_size: int | None = None) -> dict:
    """The input the backbone's ImageNet weights expect, as keyword arguments of datasets.select:
    crop_size, resize_size, mean, std, channel_order ("RGB" or "BGR"), input_range (1 or 255) and
    interpolation. `image_size` replaces the crop size, the resize keeping the crop fraction."""
    name = parse_arch(arch)[0]
    expected = {"interpolation": "bilinear", **backbone(name).preprocessing}
    if image_size:
        if timm_models.is_timm(name):
            resize = timm_models.resize_for(name.removeprefix(timm_models.PREFIX), image_size)
        else:
            resize = math.floor(image_size * expected["resize_size"] / expected["crop_size"])
        expected.update(crop_size=image_size, resize_size=resize)
    return expected


def select(arch: str, embed_dim: int, pretrained: bool = True, pretrained_weights: str | None = None,
           head: str = "linear", pooling: str = "auto", image_size: int | None = None) -> EmbeddingNetwork:
    name, suffixes = parse_arch(arch)
    if pretrained_weights is not None and not pretrained:
        raise UserError("--pretrained_weights and --not_pretrained contradict each other; drop one")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    record = backbone(name)
    if timm_models.is_timm(name):
        network = timm_models.create(name.removeprefix(timm_models.PREFIX), image_size, pretrained, pretrained_weights)
    else:
        network = record.build()
        if pretrained:
            load_imagenet_weights(network, record, name, pretrained_weights)
    tokens = timm_models.has_tokens(network)
    check_options(arch, network, suffixes, pooling, tokens)
    # the input size is part of the network only where it sizes the position embedding
    sized = timm_models.is_timm(name) and timm_models.fixed_input_size(name.removeprefix(timm_models.PREFIX))
    return EmbeddingNetwork(record, network, arch, embed_dim, head=head, frozen="frozen" in suffixes,
                            normalize="normalize" in suffixes, double_pool="double" in suffixes, pooling=pooling,
                            image_size=image_size if sized else None, tokens=tokens)


def check_options(arch, network, suffixes, pooling, tokens):
    """The suffixes and the pooling that the backbone can take, or one line saying which it cannot."""
    if "frozen" in suffixes and not any(isinstance(module, _BatchNorm) for module in network.modules()):
        raise UserError(f"--arch {arch}: the backbone has no BatchNorm for _frozen to freeze; drop _frozen")
    if tokens:
        if "double" in suffixes:
            raise UserError(f"--arch {arch}: _double pools a spatial feature map, and a vision transformer gives "
                            "tokens; drop _double")
        if pooling == "avg":
            raise UserError(f"--pooling avg pools a spatial feature map; --arch {arch} gives tokens: use "
                            "class_token, patch_mean or auto")
        if pooling == "class_token" and getattr(network, "cls_token", None) is None:
            raise UserError(f"--arch {arch} has no class token; use --pooling patch_mean or auto")
    elif pooling in ("class_token", "patch_mean"):
        raise UserError(f"--pooling {pooling} takes a vision transformer's tokens; --arch {arch} gives a feature map: "
                        "use avg or auto")


def from_checkpoint(checkpoint: dict, source: str = "the checkpoint") -> EmbeddingNetwork:
    """The network a checkpoint of this codebase describes (arch, head, embed_dim, pooling,
    image_size), with its weights."""
    description = recorded(checkpoint)
    if description["arch"] is None or description["embed_dim"] is None:
        raise UserError(f"{source} does not record its arch and embed_dim; it was not written by this codebase's "
                        "main.py")
    try:
        network = select(description["arch"], int(description["embed_dim"]), pretrained=False,
                         head=description["head"], pooling=description["pooling"],
                         image_size=description["image_size"])
    except ValueError as error:
        raise UserError(f"{source} holds a network this codebase does not build: {error}") from None
    load_weights(network, checkpoint, source)
    return network
