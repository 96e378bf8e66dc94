"""GoogLeNet (Inception v1) from torchvision, without its auxiliary classifiers."""
from architectures.registry import imagenet_preprocessing, register

# torchvision's GoogLeNet_Weights.IMAGENET1K_V1 URL, written out: importing torchvision at start-up
# makes every command's --help slow.
WEIGHT_URL = "https://download.pytorch.org/models/googlenet-1378be20.pth"

GOOGLENET_STAGES = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
                    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
                    "inception5a", "inception5b")


def googlenet_features(googlenet, images):
    x = images
    for stage in GOOGLENET_STAGES:
        x = getattr(googlenet, stage)(x)
    return x


# The weights were ported from TensorFlow and expect pixels scaled to [-1, 1]. torchvision gets
# there with transform_input on ImageNet-normalised images; mean = std = 0.5 is the same map, done
# by the dataset transform.
@register("googlenet", url=WEIGHT_URL, features=googlenet_features, classifier="fc",
          library="torchvision", preprocessing=imagenet_preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
          unused_weights=("aux1.", "aux2."))
def googlenet():
    import torchvision

    return torchvision.models.googlenet(aux_logits=False, transform_input=False, init_weights=True)
