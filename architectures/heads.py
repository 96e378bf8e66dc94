"""Embedding heads by --head name: the layers between the pooled backbone features and the embedding.

Every head ends in the linear projection `model.last_linear` (the name the paper's checkpoints
use); a head adds layers before it, after it, or both.
"""
import torch
from torch import nn

from registry import Registry

HEADS = Registry("head", order=None)  # in the order of their complexity, as --help lists them
register = HEADS.register


class ResidualBlock(nn.Module):
    """features + MLP(features); the MLP starts at zero, so the head starts as the linear one."""

    def __init__(self, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, width))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.mlp(features)


# Each returns (layers before the projection, layers after it) for pooled features of feature_dim.
@register("linear")
def linear(feature_dim: int, embed_dim: int) -> tuple[nn.Module, nn.Module]:
    return nn.Identity(), nn.Identity()


@register("bn1d")
def bn1d(feature_dim: int, embed_dim: int) -> tuple[nn.Module, nn.Module]:
    return nn.Identity(), nn.BatchNorm1d(embed_dim)


@register("mlp")
def mlp(feature_dim: int, embed_dim: int) -> tuple[nn.Module, nn.Module]:
    return nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True)), nn.Identity()


@register("skip")
def skip(feature_dim: int, embed_dim: int) -> tuple[nn.Module, nn.Module]:
    return ResidualBlock(feature_dim), nn.Identity()
