"""Bad inputs that used to end in a traceback or late in a run (issue 26): damaged archives for
`python -m datasets.prepare`, listed images that do not decode or are folders, empty lists. Each is
one line and exit status 2, before training starts."""
import os
import re
import tarfile
import zipfile

import pytest

import datasets
from datasets import image_dataset, prepare, verify
from errors import UserError, one_line
from tests.images import write_image, write_lists
from tests.program import assert_one_line_error, run_command, run_main


def run_prepare(argv, capsys):
    return run_command(prepare.main, argv, capsys)


@pytest.fixture
def car_images(tmp_path):
    for index in range(6):
        write_image(tmp_path / "src" / "car_ims" / f"{index:06d}.jpg", size=(64, 64), seed=index)
    return tmp_path / "src"


def test_prepare_on_a_truncated_tgz(car_images, tmp_path, capsys):
    with tarfile.open(tmp_path / "car_ims.tgz", "w:gz") as archive:
        archive.add(car_images / "car_ims", arcname="car_ims")
    data = (tmp_path / "car_ims.tgz").read_bytes()
    (tmp_path / "car_ims.tgz").write_bytes(data[:len(data) // 2])
    status, _, err = run_prepare(["cars196", tmp_path / "car_ims.tgz", "--out", tmp_path / "out"], capsys)
    assert_one_line_error(status, err, "car_ims.tgz", "corrupt or incomplete", "download it again")


def test_prepare_on_an_archive_with_an_absolute_link(tmp_path, capsys):
    with tarfile.open(tmp_path / "evil.tar", "w") as archive:
        link = tarfile.TarInfo("car_ims/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    status, _, err = run_prepare(["cars196", tmp_path / "evil.tar", "--out", tmp_path / "out"], capsys)
    assert_one_line_error(status, err, "evil.tar", "car_ims/passwd", "absolute path", "not extracted")
    assert not (tmp_path / "out" / "car_ims" / "passwd").exists()


def test_prepare_with_out_an_existing_file(car_images, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    status, _, err = run_prepare(["cars196", car_images / "car_ims" / "000000.jpg", "--out", tmp_path / "taken"],
                                 capsys)
    assert_one_line_error(status, err, f"--out {tmp_path / 'taken'} is a file, not a folder")


@pytest.mark.parametrize("name", ["Stanford_Online_Products.zip", "car_ims.tgz"])
def test_prepare_on_a_corrupt_archive_says_so_and_copies_nothing(name, tmp_path, capsys):
    write_image(tmp_path / "a.jpg")
    with zipfile.ZipFile(tmp_path / "whole.zip", "w") as archive:
        archive.write(tmp_path / "a.jpg", "Stanford_Online_Products/a.jpg")
    (tmp_path / name).write_bytes((tmp_path / "whole.zip").read_bytes()[:100])
    status, _, err = run_prepare(["online_products", tmp_path / name, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(status, err, name, "not a readable archive", "download it again")
    assert not (tmp_path / "out" / name).exists()


OFFICIAL_ARCHIVES = [("cub200", "CUB_200_2011.tgz"), ("cars196", "car_ims.tgz"), ("cars196", "car_devkit.tgz"),
                     ("online_products", "Stanford_Online_Products.zip"), ("inshop", "img.zip"),
                     ("inat2018", "train_val2018.tar.gz")]


@pytest.mark.parametrize("size", [30, 100])
@pytest.mark.parametrize("dataset, name", OFFICIAL_ARCHIVES)
def test_prepare_on_an_official_archive_cut_to_a_few_bytes(dataset, name, size, tmp_path, capsys):
    """A download cut short in its first bytes: is_tarfile used to raise EOFError on a gzip stream."""
    write_image(tmp_path / "src" / "a.jpg")
    whole = tmp_path / "whole"
    if name.endswith(".zip"):
        with zipfile.ZipFile(whole, "w") as archive:
            archive.write(tmp_path / "src" / "a.jpg", "images/a.jpg")
    else:
        with tarfile.open(whole, "w:gz" if name.endswith("gz") else "w") as archive:
            archive.add(tmp_path / "src" / "a.jpg", arcname="images/a.jpg")
    (tmp_path / name).write_bytes(whole.read_bytes()[:size])
    status, _, err = run_prepare([dataset, tmp_path / name, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(status, err, name, "not a readable archive (corrupt or incomplete)", "download it again")


def list_flags(root):
    return ["--dataset", "list", "--train_list", root / "CUB200_train.txt", "--test_list", root / "CUB200_val.txt"]


def tiny_run(root, tmp_path, *extra):
    return [*list_flags(root), "--not_pretrained", "--arch", "resnet18", "--embed_dim", "8", "--bs", "4",
            "--n_epochs", "1", "--kernels", "0", "--no_reports", "--save_checkpoints", "none",
            "--save_path", tmp_path / "runs", "--savename", "run", *extra]


def lists_of(root):
    return {"train_list": str(root / "CUB200_train.txt"), "test_list": str(root / "CUB200_val.txt")}


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_that_does_not_decode_stops_the_run_at_start(tmp_path, workers):
    # before: found when the image was first read, epochs into the run
    root = write_lists(tmp_path)
    broken = root / "images" / "002" / "1.jpg"
    broken.write_bytes(broken.read_bytes()[:150])
    with pytest.raises(UserError) as error:
        datasets.select("list", None, lists=lists_of(root), workers=workers)
    message = one_line(error.value)
    assert f"{broken} ({root / 'CUB200_train.txt'} line 4)" in message and "does not decode" in message
    assert "--on_bad_image skip" in message
    assert datasets.select("list", None, lists=lists_of(root), on_bad_image="skip")["train"].bad_files == [str(broken)]


def test_a_folder_listed_as_an_image_is_refused_at_start(tmp_path):
    root = write_lists(tmp_path)
    (root / "images" / "003" / "0.jpg").unlink()
    (root / "images" / "003" / "0.jpg").mkdir()
    with pytest.raises(UserError, match=re.escape(f"{root / 'images' / '003' / '0.jpg'} ({root / 'CUB200_val.txt'} "
                                                  "line 1) is a folder, not a file")):
        datasets.select("list", None, lists=lists_of(root))


def test_images_are_decoded_once_then_again_only_when_changed(tmp_path, monkeypatch):
    root = write_lists(tmp_path)
    decoded = []
    real = image_dataset.decodes

    def counted(path):
        decoded.append(path)
        return real(path)

    monkeypatch.setattr(image_dataset, "decodes", counted)
    datasets.select("list", None, lists=lists_of(root))
    assert len(decoded) == 8
    decoded.clear()
    datasets.select("list", None, lists=lists_of(root))
    assert decoded == []  # same size and modification time: the cache's answer
    changed = root / "images" / "001" / "0.jpg"
    write_image(changed, size=(20, 20), seed=3)
    os.utime(changed, ns=(1, 1))
    datasets.select("list", None, lists=lists_of(root))
    assert decoded == [str(changed)]


@pytest.mark.parametrize("emptied", ["CUB200_train.txt", "CUB200_val.txt"])
def test_an_empty_list_is_one_line_before_the_run_folder(emptied, tmp_path, capsys):
    # before: verify passed; main.py made the run folder, then "ValueError: high <= 0" or NaN recalls
    root = write_lists(tmp_path / "data")
    (root / emptied).write_text("\n")
    with pytest.raises(SystemExit) as stop:
        verify.main([str(flag) for flag in list_flags(root)] + ["--kernels", "0", "--partial"])
    assert_one_line_error(stop.value.code, capsys.readouterr().err, f"{root / emptied} lists no images")
    status = run_main(tiny_run(root, tmp_path))
    assert_one_line_error(status, capsys.readouterr().err, f"{root / emptied} lists no images")
    assert not (tmp_path / "runs").exists()


def test_a_split_left_without_images_by_skip_is_one_line(tmp_path, capsys):
    root = write_lists(tmp_path / "data")
    for image in (root / "images" / "003").iterdir():
        image.write_bytes(b"not an image")
    for image in (root / "images" / "004").iterdir():
        image.write_bytes(b"")
    status = run_main(tiny_run(root, tmp_path, "--on_bad_image", "skip"))
    assert_one_line_error(status, capsys.readouterr().err, "test split", "no readable image", "CUB200_val.txt")
    assert not (tmp_path / "runs").exists()
