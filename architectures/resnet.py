"""The ResNets, with torchvision's V1 ImageNet weights (the ones pretrainedmodels wraps)."""
import torchvision
from torchvision.models import ResNet18_Weights, ResNet34_Weights, ResNet50_Weights, ResNet101_Weights

from architectures.registry import imagenet_preprocessing, register


def resnet_features(resnet, images):
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(images))))
    for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        x = layer(x)
    return x


TORCHVISION_RESNET = {"features": resnet_features, "classifier": "fc", "library": "torchvision",
                      "preprocessing": imagenet_preprocessing(),
                      "layer_groups": {"stem": r"^conv1|^bn1", "blocks": r"^layer(\d+)\.(\d+)"}}  # as timm's ResNet


@register("resnet18", url=ResNet18_Weights.IMAGENET1K_V1.url, other_files=("resnet18-5c106cde.pth",),
          **TORCHVISION_RESNET)
def resnet18():
    return torchvision.models.resnet18()


@register("resnet34", url=ResNet34_Weights.IMAGENET1K_V1.url, other_files=("resnet34-333f7ec4.pth",),
          **TORCHVISION_RESNET)
def resnet34():
    return torchvision.models.resnet34()


@register("resnet50", url=ResNet50_Weights.IMAGENET1K_V1.url, other_files=("resnet50-19c8e357.pth",),
          **TORCHVISION_RESNET)
def resnet50():
    return torchvision.models.resnet50()


@register("resnet101", url=ResNet101_Weights.IMAGENET1K_V1.url, other_files=("resnet101-5d3b4d8f.pth",),
          **TORCHVISION_RESNET)
def resnet101():
    return torchvision.models.resnet101()
