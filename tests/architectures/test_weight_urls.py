"""The torchvision weight URLs that architectures/ writes out (so that --help need not import torchvision)
are torchvision's own."""
from torchvision.models import (
    GoogLeNet_Weights,
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
)

from architectures import BACKBONES


def test_written_out_urls_are_torchvisions():
    for name, weights in (("resnet18", ResNet18_Weights), ("resnet34", ResNet34_Weights),
                          ("resnet50", ResNet50_Weights), ("resnet101", ResNet101_Weights),
                          ("googlenet", GoogLeNet_Weights)):
        assert BACKBONES.get(name).url == weights.IMAGENET1K_V1.url, name
