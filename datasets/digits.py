"""scikit-learn's bundled 8x8 handwritten digits (no download): digits 0-4 train, 5-9 test.

A small stand-in for the image sets, for smoke tests and CPU-only trials."""
import numpy as np

from datasets.image_dataset import ImageDataset
from datasets.registry import register


# Small images get small crops that keep most of the 8x8 strokes, and a mirrored digit is
# no longer the same digit: no flip.
@register("digits", no_source="it ships with scikit-learn", crop_size=32, resize_size=36, flip=False,
          crop_scale=(0.8, 1.0))
def load(source):
    """`source` is ignored."""
    # imported here: scikit-learn takes about a second to import, which every --help would wait
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)
    is_train = digits.target < 5
    class_names = [str(digit) for digit in range(10)]
    train = ImageDataset(digits.target[is_train], class_names[:5], pixels=pixels[is_train])
    test = ImageDataset(digits.target[~is_train] - 5, class_names[5:], pixels=pixels[~is_train])
    return train, test
