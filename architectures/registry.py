"""Backbones by command-line name, filled by the @register decorator in resnet.py."""
from dataclasses import dataclass
from typing import Callable

from torch import nn
from torchvision.models import WeightsEnum


@dataclass(frozen=True)
class Backbone:
    build: Callable[[], nn.Module]  # a randomly initialised torchvision ResNet
    weights: WeightsEnum  # ImageNet weights: their URL names the cached file
    legacy_file: str  # the same weights under the older file name pretrainedmodels used


BACKBONES: dict[str, Backbone] = {}


def register(name: str, weights: WeightsEnum, legacy_file: str):
    def add(build):
        BACKBONES[name] = Backbone(build, weights, legacy_file)
        return build

    return add
