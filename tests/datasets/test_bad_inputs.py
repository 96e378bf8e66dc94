"""Bad inputs that used to end in a traceback or late in a run (issue 26): damaged archives for
`python -m datasets.prepare`, listed images that do not decode or are folders, empty lists. Each is
one line and exit status 2, before training starts."""
import tarfile
import zipfile

import pytest

from datasets import prepare
from tests.images import write_image


def run_prepare(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        prepare.main([str(flag) for flag in argv])
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


def assert_one_line(status, stderr, *fragments):
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error:"), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


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
    assert_one_line(status, err, "car_ims.tgz", "corrupt or incomplete", "download it again")


def test_prepare_on_an_archive_with_an_absolute_link(tmp_path, capsys):
    with tarfile.open(tmp_path / "evil.tar", "w") as archive:
        link = tarfile.TarInfo("car_ims/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    status, _, err = run_prepare(["cars196", tmp_path / "evil.tar", "--out", tmp_path / "out"], capsys)
    assert_one_line(status, err, "evil.tar", "car_ims/passwd", "absolute path", "not extracted")
    assert not (tmp_path / "out" / "car_ims" / "passwd").exists()


def test_prepare_with_out_an_existing_file(car_images, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    status, _, err = run_prepare(["cars196", car_images / "car_ims" / "000000.jpg", "--out", tmp_path / "taken"],
                                 capsys)
    assert_one_line(status, err, f"--out {tmp_path / 'taken'} is a file, not a folder")


@pytest.mark.parametrize("name", ["Stanford_Online_Products.zip", "car_ims.tgz"])
def test_prepare_on_a_corrupt_archive_says_so_and_copies_nothing(name, tmp_path, capsys):
    write_image(tmp_path / "a.jpg")
    with zipfile.ZipFile(tmp_path / "whole.zip", "w") as archive:
        archive.write(tmp_path / "a.jpg", "Stanford_Online_Products/a.jpg")
    (tmp_path / name).write_bytes((tmp_path / "whole.zip").read_bytes()[:100])
    status, _, err = run_prepare(["online_products", tmp_path / name, "--out", tmp_path / "out"], capsys)
    assert_one_line(status, err, name, "not a readable archive", "download it again")
    assert not (tmp_path / "out" / name).exists()
