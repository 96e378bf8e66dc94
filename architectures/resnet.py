"""The ResNets, with torchvision's V1 ImageNet weights (the ones pretrainedmodels wraps)."""
from architectures.registry import imagenet_preprocessing, register

# torchvision's ResNet*_Weights.IMAGENET1K_V1 URLs, written out: importing torchvision (which imports
# torchvision.ops and torch._dynamo) would make every command's --help slow.
WEIGHT_URLS = {"resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
               "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
               "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
               "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth"}


def resnet_features(resnet, images):
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(images))))
    for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        x = layer(x)
    return x


TORCHVISION_RESNET = {"features": resnet_features, "classifier": "fc", "library": "torchvision",
                      "preprocessing": imagenet_preprocessing(),
                      "layer_groups": {"stem": r"^conv1|^bn1", "blocks": r"^layer(\d+)\.(\d+)"}}  # as timm's ResNet


@register("resnet18", url=WEIGHT_URLS["resnet18"], other_files=("resnet18-5c106cde.pth",),
          **TORCHVISION_RESNET)
def resnet18():
    import torchvision

    return torchvision.models.resnet18()


@register("resnet34", url=WEIGHT_URLS["resnet34"], other_files=("resnet34-333f7ec4.pth",),
          **TORCHVISION_RESNET)
def resnet34():
    import torchvision

    return torchvision.models.resnet34()


@register("resnet50", url=WEIGHT_URLS["resnet50"], other_files=("resnet50-19c8e357.pth",),
          **TORCHVISION_RESNET)
def resnet50():
    import torchvision

    return torchvision.models.resnet50()


@register("resnet101", url=WEIGHT_URLS["resnet101"], other_files=("resnet101-5d3b4d8f.pth",),
          **TORCHVISION_RESNET)
def resnet101():
    import torchvision

    return torchvision.models.resnet101()
