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


def write_inshop_tree(root, train_items=4, test_items=3, per_item=(2, 1, 2)):
    """A DeepFashion In-Shop tree: img/<gender>/<category>/<item>/<n>_<view>.jpg and
    Eval/list_eval_partition.txt. Each train item has per_item[0] images; each test item
    per_item[1] queries and per_item[2] gallery images, of the same look (the same seed)."""
    rows = []
    items = [(f"id_{index:08d}", "train") for index in range(train_items)]
    items += [(f"id_{index:08d}", "test") for index in range(train_items, train_items + test_items)]
    for number, (item, role) in enumerate(items):
        statuses = ["train"] * per_item[0] if role == "train" else ["query"] * per_item[1] + ["gallery"] * per_item[2]
        for view, status in enumerate(statuses):
            name = f"img/WOMEN/Dresses/{item}/{view + 1:02d}_{view + 1}_front.jpg"
            write_image(root / name, seed=number)
            rows.append(f"{name} {item} {status}")
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    (root / "Eval" / "list_eval_partition.txt").write_text(
        "\n".join([str(len(rows)), "image_name item_id evaluation_status", *rows]) + "\n")
    return root
