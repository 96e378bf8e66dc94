"""Backbones by command-line name, filled by the @register decorator of each backbone file."""
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from registry import Registry


def imagenet_preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, channel_order="RGB", input_range=1.0) -> dict:
    """The dataset transform a backbone's ImageNet weights expect: 224-pixel crops of images resized to 256."""
    return {"crop_size": 224, "resize_size": 256, "mean": tuple(mean), "std": tuple(std),
            "channel_order": channel_order, "input_range": input_range}


@dataclass(frozen=True)
class Backbone:
    """How to build a backbone, run it up to its last feature map, and find its ImageNet weights."""
    build: Callable[[], nn.Module]  # randomly initialised, with its ImageNet classifier still attached
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # images -> last feature map (or tokens)
    classifier: str | None  # attribute holding the ImageNet classifier, which the embedding head replaces
    library: str  # whose weights files these are: torchvision, pretrainedmodels or timm
    url: str  # the ImageNet weights; the torch hub cache keeps them under the URL's file name
    preprocessing: dict  # input size, channel order and normalisation the weights were trained with
    other_files: tuple[str, ...] = ()  # the same weights under the older names pretrainedmodels used
    unused_weights: tuple[str, ...] = ()  # key prefixes of the weights file the backbone has no module for
    # timm's group matcher of the backbone's parameters, stem then blocks, for --layer_decay (timm
    # models bring their own)
    layer_groups: dict | None = None


def natural_order(names):
    """resnet18 before resnet101."""
    return sorted(names, key=lambda name: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)])


BACKBONES = Registry("backbone", order=natural_order)


def register(name: str, **backbone):
    def add(build):
        BACKBONES.register(name, Backbone(build, **backbone))
        return build

    return add
