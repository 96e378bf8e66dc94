"""python -m evaluation.export --onnx / --torch_export: the exported network reproduces the PyTorch
one (any batch size), carries its preprocessing, and bad input is one line with exit status 2."""
import json

import numpy as np
import pytest
import torch

import architectures
from evaluation import export, networks
from tests.images import write_class_tree

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

RESNET = ("resnet18_frozen_normalize", 64)
VIT = ("timm:vit_tiny_patch16_224_normalize", 32)


def save_checkpoint(path, arch, image_size):
    """A checkpoint as main.py writes it."""
    torch.manual_seed(0)
    network = architectures.select(arch, 16, pretrained=False, image_size=image_size)
    config = {"dataset": "cub200", "image_size": image_size, "augmentation": "base"}
    torch.save({"network": network.state_dict(), **architectures.describe(network), "epoch": 3, "config": config},
               path)
    return path


def run(argv, capsys):
    try:
        export.main(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def resnet_exports(tmp_path_factory):
    """The command on a ResNet checkpoint: both exports, checked on --images, and the embeddings."""
    folder = tmp_path_factory.mktemp("resnet")
    checkpoint = save_checkpoint(folder / "net.pth", *RESNET)
    images = write_class_tree(folder / "tree", ["cat", "dog"], images_per_class=2) / "images"
    with pytest.MonkeyPatch.context() as patch:
        printed = []
        patch.setattr("builtins.print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))
        export.main(["--checkpoint", str(checkpoint), "--onnx", str(folder / "out" / "net.onnx"), "--torch_export",
                     str(folder / "out" / "net.pt2"), "--images", str(images), "--out", str(folder / "emb"),
                     "--kernels", "0"])
    return folder, networks.load(str(checkpoint)), printed


@pytest.fixture(scope="module")
def vit_exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit")
    checkpoint = networks.load(str(save_checkpoint(folder / "net.pth", *VIT)))
    inputs, description = export.parity_inputs(checkpoint, [])
    onnx_difference = export.export_onnx(checkpoint, str(folder / "net.onnx"), inputs, description)
    torch_difference = export.export_torch(checkpoint, str(folder / "net.pt2"), inputs, description)
    return folder, checkpoint, (onnx_difference, torch_difference)


def onnx_outputs(path, inputs):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["embeddings"], {"images": inputs.numpy()})[0]


@pytest.mark.parametrize("which", ["resnet", "vit"])
@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_equals_pytorch_for_any_batch_size(which, batch, request):
    folder, checkpoint, *_ = request.getfixturevalue(f"{which}_exports")
    size = (RESNET if which == "resnet" else VIT)[1]
    inputs = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = checkpoint.network(inputs).numpy()
    got = onnx_outputs(folder / ("out" if which == "resnet" else "") / "net.onnx", inputs)
    assert got.shape == (batch, 16)
    assert np.abs(got - expected).max() < export.TOLERANCE


@pytest.mark.parametrize("which", ["resnet", "vit"])
def test_the_metadata_holds_the_evaluation_preprocessing(which, request):
    import onnx

    folder, checkpoint, *_ = request.getfixturevalue(f"{which}_exports")
    path = folder / ("out" if which == "resnet" else "") / "net.onnx"
    metadata = {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}
    arch, size = RESNET if which == "resnet" else VIT
    expected = architectures.preprocessing(arch, size)
    assert int(metadata["crop_size"]) == size == expected["crop_size"]
    assert int(metadata["resize_size"]) == expected["resize_size"]
    assert json.loads(metadata["mean"]) == pytest.approx(list(expected["mean"]))
    assert json.loads(metadata["std"]) == pytest.approx(list(expected["std"]))
    assert metadata["interpolation"] == expected["interpolation"] == ("bilinear" if which == "resnet" else "bicubic")
    assert (metadata["channel_order"], float(metadata["input_range"])) == ("RGB", 1.0)
    assert (metadata["arch"], metadata["embed_dim"], json.loads(metadata["normalized"])) == (arch, "16", True)
    assert metadata["source"].startswith("OBD-SD") and metadata["epoch"] == "3"
    # the same values the evaluation's transform uses
    preprocessing = networks.evaluation_preprocessing(checkpoint)
    assert metadata["interpolation"] == preprocessing.interpolation
    transform = networks.evaluation_transform(checkpoint).transforms
    assert (transform[0].size, transform[1].size[0]) == (int(metadata["resize_size"]), size)


@pytest.mark.parametrize("which", ["resnet", "vit"])
def test_torch_export_round_trip_equals_eager(which, request):
    folder, checkpoint, *_ = request.getfixturevalue(f"{which}_exports")
    path = folder / ("out" if which == "resnet" else "") / "net.pt2"
    extra = {export.EXTRA_FILE: ""}
    program = torch.export.load(str(path), extra_files=extra)
    assert json.loads(extra[export.EXTRA_FILE])["crop_size"] == str((RESNET if which == "resnet" else VIT)[1])
    size = (RESNET if which == "resnet" else VIT)[1]
    for batch in (1, 3):
        inputs = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            assert (program.module()(inputs) - checkpoint.network(inputs)).abs().max() < export.TOLERANCE


def test_the_command_prints_the_differences_and_writes_the_files(resnet_exports, vit_exports):
    folder, _, printed = resnet_exports
    assert (folder / "out" / "net.onnx").stat().st_size > 1e6 and (folder / "out" / "net.pt2").exists()
    assert not (folder / "out" / "net.onnx.data").exists()  # weights inside the one file
    onnx_line, torch_line, embeddings_line = printed
    assert "net.onnx" in onnx_line and "largest |ONNX - PyTorch| on 4 images" in onnx_line
    assert "net.pt2" in torch_line and "largest |torch.export - PyTorch| on 4 images" in torch_line
    assert float(onnx_line.rsplit(" ", 1)[1]) < export.TOLERANCE
    assert np.load(folder / "emb.npy").shape == (4, 16) and "4 embeddings" in embeddings_line
    assert max(vit_exports[2]) < export.TOLERANCE


def test_without_images_the_check_uses_random_inputs_and_no_embeddings_are_written(tmp_path, capsys, monkeypatch):
    checkpoint = save_checkpoint(tmp_path / "net.pth", *RESNET)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["--checkpoint", str(checkpoint), "--torch_export", "net.pt2"], capsys)
    assert code == 0, err
    assert "on 3 random inputs" in out and (tmp_path / "net.pt2").exists()
    assert not (tmp_path / "embeddings.npy").exists()


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    checkpoint = save_checkpoint(tmp_path / "net.pth", *RESNET)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    for argv, fragments in [
            (["--checkpoint", str(tmp_path / "notes.txt"), "--onnx", str(tmp_path / "a.onnx")],
             ["not a readable checkpoint"]),
            (["--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "net.pt2")], ["does not end in .onnx"]),
            (["--checkpoint", str(checkpoint), "--torch_export", str(tmp_path / "net.onnx")], ["does not end in .pt2"]),
            (["--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "notes.txt" / "net.onnx")],
             ["cannot write", "choose another --onnx"]),
            (["--checkpoint", str(checkpoint), "--torch_export", str(tmp_path)], ["does not end in .pt2"]),
            (["--checkpoint", str(checkpoint)], ["nothing to do", "--images", "--onnx"])]:
        assert_one_line_error(*run(argv, capsys)[::2], *fragments)
    assert not (tmp_path / "a.onnx").exists()
    # an export that does not reproduce the network is an error, not a warning
    monkeypatch.setattr(export, "TOLERANCE", -1.0)
    assert_one_line_error(*run(["--checkpoint", str(checkpoint), "--torch_export", str(tmp_path / "net.pt2")],
                               capsys)[::2], "above the tolerance", "net.pt2")


def test_the_parity_check_takes_the_first_images_of_a_larger_folder(tmp_path):
    """Issue 26: a folder of more than PARITY_IMAGES images raised IndexError (all labels, 4 paths)."""
    checkpoint = networks.load(str(save_checkpoint(tmp_path / "net.pth", *RESNET)))
    paths, _ = export.find_images(str(write_class_tree(tmp_path / "tree", ["cat", "dog"], images_per_class=3)))
    assert len(paths) > export.PARITY_IMAGES
    inputs, description = export.parity_inputs(checkpoint, paths)
    assert description == "images" and inputs.shape == (export.PARITY_IMAGES, 3, RESNET[1], RESNET[1])
