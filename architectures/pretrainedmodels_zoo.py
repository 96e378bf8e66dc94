"""BN-Inception and SE-ResNeXt50 from the pretrainedmodels package, with its ImageNet weights."""
from architectures.registry import imagenet_preprocessing, register


def own_features(network, images):
    return network.features(images)


def _pretrainedmodels():
    # Imported when a network is built: the package loads all of its model files on import.
    import pretrainedmodels

    return pretrainedmodels


# BN-Inception was ported from Caffe: BGR images on a 0-255 scale, mean given in BGR order. The URL
# is the one of the pretrainedmodels release on PyPI; its GitHub master names a later port 239d2248.
@register("bninception", url="http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth",
          other_files=("bn_inception-239d2248.pth",),
          features=own_features, classifier="last_linear", library="pretrainedmodels",
          preprocessing=imagenet_preprocessing(mean=(104, 117, 128), std=(1, 1, 1), channel_order="BGR",
                                               input_range=255.0))
def bninception():
    return _pretrainedmodels().bninception(pretrained=None)


@register("se_resnext50", url="http://data.lip6.fr/cadene/pretrainedmodels/se_resnext50_32x4d-a260b3a4.pth",
          features=own_features, classifier="last_linear", library="pretrainedmodels",
          preprocessing=imagenet_preprocessing(), layer_groups={"stem": r"^layer0\.", "blocks": r"^layer(\d+)\.(\d+)"})
def se_resnext50():
    return _pretrainedmodels().se_resnext50_32x4d(pretrained=None)
