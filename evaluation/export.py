"""Embed every image under a folder with a trained network: <out>.npy (N x embed_dim float32) and
<out>.csv (row, path, class), rows in the same order; or export the network to ONNX / torch.export.

    python -m evaluation.export --checkpoint PATH --images FOLDER --out embeddings
    python -m evaluation.export --checkpoint PATH --onnx net.onnx [--torch_export net.pt2] [--images FOLDER]

Images are found recursively (hidden files skipped), in sorted path order. `class` is the first
sub-folder under FOLDER (FOLDER/<class>/.../<image>), empty for images directly in FOLDER. The
preprocessing is the evaluation one of the dataset the network was trained on.

The exported network takes images (B x 3 x H x W float32, already preprocessed) and returns
embeddings (B x embed_dim), B free. The preprocessing it expects is stored with it (ONNX:
metadata_props; torch.export: the extra file preprocessing.json). Each export is checked against
the PyTorch network on the first few --images (else random inputs of the crop size).
"""
import csv
import json
import os
import subprocess
import time

import numpy as np
import torch
from tqdm import tqdm

import distributed
from datasets.image_dataset import ImageDataset
from datasets.layout import IMAGE_EXTENSIONS
from errors import CommandParser, UserError, first_line, one_line, run_command
from evaluation import networks

TOLERANCE = 1e-4  # the largest |exported - PyTorch| embedding difference accepted
PARITY_IMAGES = 4  # how many of the --images the exports are checked on
# ONNX opset 18: the one torch.onnx's dynamo exporter translates to natively (its TORCHLIB_OPSET);
# onnxruntime runs it from 1.14.
ONNX_OPSET = 18
EXTRA_FILE = "preprocessing.json"  # the metadata inside a torch.export archive
PIPELINE = ("resize the shorter side to resize_size (interpolation), centre-crop crop_size x crop_size, "
            "pixels to [0, input_range] in channel_order, subtract mean and divide by std per channel, "
            "NCHW float32")


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


def embedded_batches(checkpoint, paths, device, batch_size=64, workers=0, description="embedding images"):
    """Embeddings of the image files, in order, one batch (B x embed_dim float32) at a time."""
    dataset = ImageDataset(np.zeros(len(paths), dtype=np.int64), [""], paths=list(paths),
                           transform=networks.evaluation_transform(checkpoint))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    network = checkpoint.network.to(device).eval()
    try:
        with torch.no_grad():
            for images, _ in tqdm(loader, desc=description, leave=False, disable=None):
                yield network(images.to(device, non_blocking=True)).float().cpu().numpy()
    except UserError as error:  # load_rgb's, whose fix names a flag of the training command
        problem = one_line(error).split("; remove or replace")[0]
        raise UserError(f"{problem}; remove or replace the file: only images may lie in the folders given") from None


def embed_images(checkpoint, paths, device, batch_size=64, workers=0):
    """Embeddings (N x D float32) of the image files, in order."""
    features = np.empty((len(paths), checkpoint.embed_dim), dtype=np.float32)
    start = 0
    for batch in embedded_batches(checkpoint, paths, device, batch_size, workers):
        features[start:start + len(batch)] = batch
        start += len(batch)
    return features


def add_network_flags(parser):
    parser.add_argument("--checkpoint", required=True, help="this codebase's checkpoint or a paper net.pth")
    parser.add_argument("--arch", default=None, help="for the paper's files (default resnet50_frozen_normalize)")
    parser.add_argument("--embed_dim", type=int, default=None, help="default: the checkpoint's own")
    parser.add_argument("--bs", type=int, default=64, help="batch size")
    parser.add_argument("--kernels", type=int, default=min(8, os.cpu_count() or 1), help="dataloader workers")
    parser.add_argument("--gpu", type=int, default=0, help="CUDA device; CPU when none exists")


def device_of(gpu):
    """The device of an evaluation command; on the CPU with distributed.cpu_threads threads."""
    distributed.use_cpu_threads()
    return torch.device(f"cuda:{gpu}" if torch.cuda.is_available() else "cpu")


def metadata(checkpoint):
    """What a server needs besides the graph: the preprocessing (as the evaluation does it), the
    network's description and where it came from. Strings: numbers as written, lists as JSON."""
    preprocessing = networks.evaluation_preprocessing(checkpoint)
    # the crop and resize evaluation uses (--augmentation big evaluates on larger crops)
    resize, crop = networks.evaluation_transform(checkpoint).transforms[:2]
    network = checkpoint.network
    values = {"crop_size": crop.size[0], "resize_size": resize.size, "mean": list(preprocessing.mean),
              "std": list(preprocessing.std), "channel_order": preprocessing.channel_order,
              "input_range": preprocessing.input_range, "interpolation": preprocessing.interpolation,
              "preprocessing": PIPELINE, "input": "images", "output": "embeddings", "arch": checkpoint.arch,
              "embed_dim": checkpoint.embed_dim, "normalized": bool(network.normalize),
              "head": getattr(network, "head", None), "pooling": getattr(network, "pooling", None),
              "epoch": checkpoint.epoch, "source": f"OBD-SD {_commit()}".strip(), "torch": torch.__version__}
    return {key: json.dumps(value) if isinstance(value, (list, bool)) else str(value)
            for key, value in values.items() if value is not None}


def _commit():
    """This codebase's git commit (+"-dirty"), or "" outside a git checkout."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], capture_output=True,
                              text=True, timeout=10, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def parity_inputs(checkpoint, paths):
    """The first PARITY_IMAGES images preprocessed as in evaluation, else 3 random inputs of the crop size."""
    if paths:
        chosen = list(paths[:PARITY_IMAGES])
        dataset = ImageDataset(np.zeros(len(chosen), dtype=np.int64), [""], paths=chosen,
                               transform=networks.evaluation_transform(checkpoint))
        return torch.stack([dataset[index][0] for index in range(len(dataset))]), "images"
    crop = networks.evaluation_transform(checkpoint).transforms[1].size[0]
    return torch.randn(3, 3, crop, crop, generator=torch.Generator().manual_seed(0)), "random inputs"


def _example(inputs):
    # an example batch of 2: torch.export specialises a dimension of size 1 to a constant
    return inputs[:1].expand(2, *inputs.shape[1:]).contiguous()


def _writable(path, flag, extension):
    if not path.endswith(extension):
        raise UserError(f"--{flag} {path} does not end in {extension}; name the file <name>{extension}")
    existed = os.path.exists(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if os.path.isdir(path):
            raise IsADirectoryError(21, "Is a directory", path)
        with open(path, "ab"):
            pass
        if not existed:
            os.remove(path)
    except OSError as error:
        raise UserError(f"cannot write {error.filename or path}: {error.strerror}; choose another --{flag}") from None


def _check(difference, what, inputs, description, path):
    line = f"largest |{what} - PyTorch| on {len(inputs)} {description}: {difference:.2e}"
    if not difference <= TOLERANCE:
        raise UserError(f"{line}, above the tolerance {TOLERANCE:g}; {path} does not reproduce the network")
    return line


def export_onnx(checkpoint, path, inputs, description="inputs"):
    """Write the network as ONNX (batch axis free, preprocessing in metadata_props) and check it
    with onnxruntime on `inputs`: the largest absolute difference from PyTorch."""
    import onnx
    import onnxruntime

    network = checkpoint.network.cpu().eval()
    start = time.perf_counter()
    # The dynamo exporter (torch.export + onnxscript) first: the TorchScript one is deprecated since
    # PyTorch 2.9, and its tracer bakes Python branches (timm's position-embedding resampling) into
    # the graph. Both reproduce ResNets and timm ViTs to ~1e-6; the TorchScript exporter remains
    # the fallback for a network torch.export cannot capture.
    exporter = "dynamo"
    try:
        _export_onnx_dynamo(network, path, _example(inputs))
    except Exception as error:  # any failure of the new exporter: try the old one
        first = first_line(error)
        exporter = "TorchScript"
        try:
            torch.onnx.export(network, (_example(inputs),), path, dynamo=False, input_names=["images"],
                              output_names=["embeddings"], opset_version=ONNX_OPSET,
                              dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}})
        except Exception as second:
            raise UserError(f"ONNX export of {checkpoint.arch} failed (dynamo: {first}; TorchScript: "
                            f"{first_line(second)}); try --torch_export") from None
    seconds = time.perf_counter() - start
    model = onnx.load(path, load_external_data=False)
    values = metadata(checkpoint)
    kept = [(entry.key, entry.value) for entry in model.metadata_props if entry.key not in values]
    del model.metadata_props[:]
    for key, value in [*kept, *values.items()]:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = network(inputs).numpy()
    got = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
    difference = float(np.abs(got - expected).max())
    line = _check(difference, "ONNX", inputs, description, path)
    print(f"wrote {path} (ONNX opset {ONNX_OPSET}, {exporter} exporter, {seconds:.1f} s); {line}")
    return difference


def _export_onnx_dynamo(network, path, example):
    # weights inside the file unless over protobuf's 2 GB limit (then in <path>.data beside it)
    large = sum(parameter.numel() * parameter.element_size() for parameter in network.state_dict().values()) > 1.5e9
    torch.onnx.export(network, (example,), path, dynamo=True, input_names=["images"], output_names=["embeddings"],
                      opset_version=ONNX_OPSET, dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
                      external_data=large, verbose=False)


def export_torch(checkpoint, path, inputs, description="inputs"):
    """Write the network with torch.export (batch dimension free, preprocessing.json inside) and
    check the program loaded back against the eager network: the largest absolute difference."""
    network = checkpoint.network.cpu().eval()
    start = time.perf_counter()
    try:
        program = torch.export.export(network, (_example(inputs),),
                                      dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}})
    except Exception as error:  # torch.export's failures have many types
        raise UserError(f"torch.export cannot export {checkpoint.arch} ({first_line(error)}); "
                        "export it with --onnx instead") from None
    torch.export.save(program, path, extra_files={EXTRA_FILE: json.dumps(metadata(checkpoint))})
    seconds = time.perf_counter() - start
    with torch.no_grad():
        expected = network(inputs)
        got = torch.export.load(path).module()(inputs)
    difference = float((got - expected).abs().max())
    line = _check(difference, "torch.export", inputs, description, path)
    print(f"wrote {path} (torch.export, {seconds:.1f} s); {line}")
    return difference



def run(opt):
    exports = [(flag, path) for flag, path in (("onnx", opt.onnx), ("torch_export", opt.torch_export)) if path]
    if not opt.images and not exports:
        raise UserError("nothing to do: give --images FOLDER to embed, or --onnx OUT.onnx / --torch_export OUT.pt2")
    for flag, path in exports:
        _writable(path, flag, ".onnx" if flag == "onnx" else ".pt2")
    checkpoint = networks.load(opt.checkpoint, opt.arch, opt.embed_dim)
    paths, classes = find_images(opt.images) if opt.images else ([], [])
    if exports:
        inputs, description = parity_inputs(checkpoint, paths)
        if opt.onnx:
            export_onnx(checkpoint, opt.onnx, inputs, description)
        if opt.torch_export:
            export_torch(checkpoint, opt.torch_export, inputs, description)
        if opt.out is None:
            return None, paths
    out = opt.out or "embeddings"
    features = embed_images(checkpoint, paths, device_of(opt.gpu), opt.bs, opt.kernels)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        np.save(f"{out}.npy", features)
        with open(f"{out}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "path", "class"])
            writer.writerows((row, path, name) for row, (path, name) in enumerate(zip(paths, classes)))
    except OSError as error:
        raise UserError(f"cannot write {error.filename or out}: {error.strerror}; choose another --out") from None
    print(f"{len(paths)} embeddings ({features.shape[1]}-d) written to {out}.npy, paths to {out}.csv")
    return features, paths


def main(argv=None):
    parser = CommandParser(command="python -m evaluation.export", description=__doc__.split("\n\n")[0])
    add_network_flags(parser)
    parser.add_argument("--images", default=None, help="folder of images, searched recursively (optional with "
                        "--onnx / --torch_export: their first images check the export)")
    parser.add_argument("--out", default=None, help="output prefix: <out>.npy and <out>.csv; default embeddings, "
                        "and no embeddings with --onnx / --torch_export unless given")
    parser.add_argument("--onnx", default=None, help="export the network to this .onnx file (batch axis free, "
                        "preprocessing in its metadata) and check it with onnxruntime")
    parser.add_argument("--torch_export", default=None, help="export the network with torch.export to this .pt2 "
                        "file and check it against the eager network")
    run_command(run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
