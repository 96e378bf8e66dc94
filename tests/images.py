"""Tiny generated image files and class trees for the tests."""
import numpy as np
from PIL import Image


def write_image(path, mode="RGB", size=(40, 30), seed=0):
    """A small random image; the format follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode == "P":
        # per-entry alpha, the palette transparency PIL warns about when converted straight to RGB
        image.quantize(16).save(path, transparency=bytes([0, 128] + [255] * 14))
    else:
        image.convert(mode).save(path)


def write_class_tree(root, class_names, images_per_class=3):
    for class_index, name in enumerate(class_names):
        for image_index in range(images_per_class):
            write_image(root / "images" / name / f"img_{image_index}.jpg", seed=class_index * 10 + image_index)
    return root
