"""Tiny generated image files and class trees for the tests."""
import numpy as np
from PIL import Image


def write_image(path, mode="RGB", size=(40, 30), seed=0, variant=0):
    """A small random image; the format follows the extension. Images of one seed and other
    `variant`s look alike but are not the same file content (one corner pixel differs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    pixels[0, 0] ^= np.uint8(variant * 37 % 256)
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
    per_item[1] queries and per_item[2] gallery images, of the same look (the same seed; distinct
    files all the same, as datasets.duplicates requires)."""
    rows = []
    items = [(f"id_{index:08d}", "train") for index in range(train_items)]
    items += [(f"id_{index:08d}", "test") for index in range(train_items, train_items + test_items)]
    for number, (item, role) in enumerate(items):
        statuses = ["train"] * per_item[0] if role == "train" else ["query"] * per_item[1] + ["gallery"] * per_item[2]
        for view, status in enumerate(statuses):
            name = f"img/WOMEN/Dresses/{item}/{view + 1:02d}_{view + 1}_front.jpg"
            write_image(root / name, seed=number, variant=view)
            rows.append(f"{name} {item} {status}")
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    (root / "Eval" / "list_eval_partition.txt").write_text(
        "\n".join([str(len(rows)), "image_name item_id evaluation_status", *rows]) + "\n")
    return root


# in class-index order, as cars_meta.mat lists them: within each half the index order and the sorted
# order of the names disagree, as they do in the real dataset
CAR_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura Integra Type R 2001",
               "BMW X5 SUV 2007", "BMW M3 Coupe 2012", "smart fortwo Convertible 2012"]


def _savemat_records(path, key, records, **extra):
    from scipy.io import savemat

    fields = list(records[0])
    table = np.zeros((1, len(records)), dtype=[(field, "O") for field in fields])
    for index, record in enumerate(records):
        table[0, index] = tuple(record[field] for field in fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {key: table, **extra})


def write_cars_trees(root, per_class=3):
    """The three CARS196 layouts of the same images: root/repackaged, root/official, root/devkit."""
    names = np.array(CAR_CLASSES, dtype=object).reshape(1, -1)
    official, devkit_train, devkit_test = [], [], []
    for number in range(len(CAR_CLASSES) * per_class):
        label = number // per_class + 1
        name = f"{number + 1:06d}.jpg"
        write_image(root / "repackaged" / "images" / CAR_CLASSES[label - 1] / name, seed=number)
        write_image(root / "official" / "car_ims" / name, seed=number)
        box = {"bbox_x1": 1, "bbox_y1": 1, "bbox_x2": 30, "bbox_y2": 20}
        official.append({"relative_im_path": f"car_ims/{name}", **box, "class": label, "test": number % 2})
        split, records = ("cars_test", devkit_test) if number % 2 else ("cars_train", devkit_train)
        write_image(root / "devkit" / split / name, seed=number)
        records.append({**box, "class": label, "fname": name})
    _savemat_records(root / "official" / "cars_annos.mat", "annotations", official, class_names=names)
    _savemat_records(root / "devkit" / "devkit" / "cars_train_annos.mat", "annotations", devkit_train)
    _savemat_records(root / "devkit" / "devkit" / "cars_test_annos_withlabels.mat", "annotations", devkit_test)
    from scipy.io import savemat

    savemat(root / "devkit" / "devkit" / "cars_meta.mat", {"class_names": names})
    return root


def write_sop_official(root):
    """Stanford_Online_Products as its zip unpacks: Ebay_*.txt beside the <category>_final folders."""
    rows = {"Ebay_train.txt": [(1, 1, 1, "bicycle_final/1_0.JPG"), (2, 1, 1, "bicycle_final/1_1.JPG"),
                               (3, 2, 1, "bicycle_final/2_0.JPG"), (4, 2, 1, "bicycle_final/2_1.JPG")],
            "Ebay_test.txt": [(5, 3, 2, "chair_final/3_0.JPG"), (6, 3, 2, "chair_final/3_1.JPG"),
                              (7, 4, 2, "chair_final/4_0.JPG"), (8, 4, 2, "chair_final/4_1.JPG")]}
    header = "image_id class_id super_class_id path"
    for name, lines in rows.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("\n".join([header, *(" ".join(map(str, row)) for row in lines)]) + "\n")
        for row in lines:
            write_image(root / row[3], seed=row[0])
    (root / "Ebay_info.txt").write_text(header + "\n")
    return root


def write_inat_tree(root, per_class=2):
    """train_val2018/<kingdom>/<species>/ with the Smooth-AP split files listing two classes each."""
    splits = {"Inaturalist_train_set1.txt": ["Plantae/7477", "Aves/2101"],
              "Inaturalist_test_set1.txt": ["Fungi/913", "Insecta/3205"]}
    for number, (list_name, species) in enumerate(splits.items()):
        lines = []
        for index, folder in enumerate(species):
            for image in range(per_class):
                path = f"train_val2018/{folder}/{index}{image}a6f.jpg"
                write_image(root / path, seed=100 * number + len(lines) + 10 * index)
                lines.append(path)
        (root / list_name).write_text("\n".join(lines) + "\n")
    return root


def write_dogs_tree(root, per_class=(3, 2)):
    """Tsinghua Dogs: train/ and val/ folders of the same classes, <number>-<id>-<breed>, the
    leading number not the same in both."""
    for index, breed in enumerate(["n000001-Shiba_Dog", "n000004-Pomeranian", "n000122-Labrador"]):
        for split, count in zip(("train", "val"), per_class):
            for image in range(count):
                write_image(root / split / f"{count * (3 - index)}-{breed}" / f"n1{index}{image}.jpg",
                            seed=10 * index + image + (100 if split == "val" else 0))
    return root


def write_lists(root, per_class=2):
    """PaddlePaddle-style lists: CUB200_train.txt (classes 1, 2) and CUB200_val.txt (3, 4)."""
    for name, classes in (("CUB200_train.txt", (1, 2)), ("CUB200_val.txt", (3, 4))):
        lines = []
        for label in classes:
            for image in range(per_class):
                path = f"images/{label:03d}/{image}.jpg"
                write_image(root / path, seed=10 * label + image)
                lines.append(f"{path} {label}")
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def _numbered(values):
    return "\n".join(f"{number} {value}" for number, value in enumerate(values, start=1)) + "\n"


def write_cub_official(root, n_classes=4, per_class=2):
    """CUB_200_2011.tgz as it unpacks: CUB_200_2011/images/<nnn>.<name>/ with images.txt,
    image_class_labels.txt, classes.txt and train_test_split.txt beside it."""
    cub = root / "CUB_200_2011"
    images, labels, splits = [], [], []
    for label in range(1, n_classes + 1):
        for image in range(per_class):
            path = f"{label:03d}.Bird_{label}/Bird_{label}_{image:04d}_{label}{image}.jpg"
            write_image(cub / "images" / path, seed=10 * label + image)
            images.append(path)
            labels.append(label)
            splits.append(image % 2)
    (cub / "images.txt").write_text(_numbered(images))
    (cub / "image_class_labels.txt").write_text(_numbered(labels))
    (cub / "train_test_split.txt").write_text(_numbered(splits))
    (cub / "classes.txt").write_text(_numbered(f"{label:03d}.Bird_{label}" for label in range(1, n_classes + 1)))
    (root / "attributes.txt").write_text("1 has_bill_shape::curved_(up_or_down)\n")
    return root
