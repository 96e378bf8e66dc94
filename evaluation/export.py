"""Embed every image under a folder with a trained network: <out>.npy (N x embed_dim float32) and
<out>.csv (row, path, class), rows in the same order.

    python -m evaluation.export --checkpoint PATH --images FOLDER --out embeddings

Images are found recursively (hidden files skipped), in sorted path order. `class` is the first
sub-folder under FOLDER (FOLDER/<class>/.../<image>), empty for images directly in FOLDER. The
preprocessing is the evaluation one of the dataset the network was trained on.
"""
import csv
import os

import numpy as np
import torch

from datasets.image_dataset import ImageDataset
from datasets.layout import IMAGE_EXTENSIONS
from errors import CommandParser, UserError, run_command
from evaluation import networks
from evaluation.features import embed


def find_images(folder):
    """(paths, class names): every image under `folder`, sorted; the class is the first sub-folder."""
    if not os.path.isdir(folder):
        raise UserError(f"no folder {folder}; give a folder of images (FOLDER/<image> or FOLDER/<class>/<image>)")
    paths = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        paths += [os.path.join(root, name) for name in sorted(files)
                  if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS]
    if not paths:
        raise UserError(f"no images ({' '.join(IMAGE_EXTENSIONS)}) under {folder}")
    paths.sort()
    classes = [_class_of(path, folder) for path in paths]
    return paths, classes


def _class_of(path, folder):
    parts = os.path.relpath(path, folder).split(os.sep)
    return parts[0] if len(parts) > 1 else ""


def embed_images(checkpoint, paths, device, batch_size=64, workers=0):
    """Embeddings (N x D float32) of the image files, in order."""
    dataset = ImageDataset(np.zeros(len(paths), dtype=np.int64), [""], paths=list(paths),
                           transform=networks.evaluation_transform(checkpoint))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    return embed(checkpoint.network.to(device), loader, device, description="embedding images")[0]


def add_network_flags(parser):
    parser.add_argument("--checkpoint", required=True, help="this codebase's checkpoint or a paper net.pth")
    parser.add_argument("--arch", default=None, help="for the paper's files (default resnet50_frozen_normalize)")
    parser.add_argument("--embed_dim", type=int, default=None, help="default: the checkpoint's own")
    parser.add_argument("--bs", type=int, default=64, help="batch size")
    parser.add_argument("--kernels", type=int, default=min(8, os.cpu_count() or 1), help="dataloader workers")
    parser.add_argument("--gpu", type=int, default=0, help="CUDA device; CPU when none exists")


def device_of(gpu):
    return torch.device(f"cuda:{gpu}" if torch.cuda.is_available() else "cpu")


def run(opt):
    checkpoint = networks.load(opt.checkpoint, opt.arch, opt.embed_dim)
    paths, classes = find_images(opt.images)
    features = embed_images(checkpoint, paths, device_of(opt.gpu), opt.bs, opt.kernels)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(opt.out)), exist_ok=True)
        np.save(f"{opt.out}.npy", features)
        with open(f"{opt.out}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "path", "class"])
            writer.writerows((row, path, name) for row, (path, name) in enumerate(zip(paths, classes)))
    except OSError as error:
        raise UserError(f"cannot write {error.filename or opt.out}: {error.strerror}; choose another --out") from None
    print(f"{len(paths)} embeddings ({features.shape[1]}-d) written to {opt.out}.npy, paths to {opt.out}.csv")
    return features, paths


def main(argv=None):
    parser = CommandParser(command="python -m evaluation.export", description=__doc__.split("\n\n")[0])
    add_network_flags(parser)
    parser.add_argument("--images", required=True, help="folder of images, searched recursively")
    parser.add_argument("--out", default="embeddings", help="output prefix: <out>.npy and <out>.csv")
    run_command(run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
