"""The ResNets of the paper, with torchvision's V1 ImageNet weights (the ones pretrainedmodels wraps)."""
import torchvision
from torchvision.models import ResNet18_Weights, ResNet50_Weights

from architectures.registry import register


@register("resnet18", ResNet18_Weights.IMAGENET1K_V1, legacy_file="resnet18-5c106cde.pth")
def resnet18():
    return torchvision.models.resnet18()


@register("resnet50", ResNet50_Weights.IMAGENET1K_V1, legacy_file="resnet50-19c8e357.pth")
def resnet50():
    return torchvision.models.resnet50()
