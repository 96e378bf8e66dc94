"""Turn a dataset's official archives into a folder its loader reads, then verify it.

    python -m datasets.prepare NAME ARCHIVE... --out DIR [--kernels N] [--partial]

Each ARCHIVE (.tar, .tar.gz / .tgz, .zip) is extracted into DIR; any other file (e.g.
cars_annos.mat) is copied there, or where its dataset's loader looks for it
(list_eval_partition.txt into Eval/). Nothing is downloaded: docs/datasets.md says where each
dataset's archives come from. Extraction never writes outside DIR. Then datasets.verify runs on
DIR, and its exit status is this command's.
"""
import gzip
import lzma
import os
import shutil
import sys
import tarfile
import zipfile
import zlib

import datasets
from datasets.verify import report
from errors import CommandParser, UserError, first_line, run_command

# loose files that the loaders read from a sub-folder of the dataset folder
PLACES = {"list_eval_partition.txt": "Eval"}
# names that promise an archive: one that does not open is corrupt, not a loose file to copy
ARCHIVE_EXTENSIONS = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
# what reading a damaged archive raises: a compressed stream cut short, bad checksums, bad headers
CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


def extract(archive, out):
    """Extract (or copy) `archive` into `out`, refusing members that would land outside it."""
    if not os.path.isfile(archive):
        raise UserError(f"no file {archive}; give the dataset's archives (.tar, .tgz, .zip) or its files")
    try:
        is_tar, is_zip = tarfile.is_tarfile(archive), zipfile.is_zipfile(archive)
        readable = is_tar or is_zip or not archive.lower().endswith(ARCHIVE_EXTENSIONS)
    except CORRUPT:  # a compressed stream cut short: is_tarfile reads into it
        readable = False
    if not readable:
        raise UserError(f"{archive} is not a readable archive (corrupt or incomplete); download it again")
    if not (is_tar or is_zip):
        folder = os.path.join(out, PLACES.get(os.path.basename(archive), ""))
        os.makedirs(folder, exist_ok=True)
        shutil.copy2(archive, folder)
        return
    root = os.path.realpath(out)
    try:
        if is_tar:
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    _check_inside(archive, member.name, out, root)
                tar.extractall(out, filter="data")
        else:
            with zipfile.ZipFile(archive) as package:
                for name in package.namelist():
                    _check_inside(archive, name, out, root)
                package.extractall(out)
    except tarfile.FilterError as error:
        # a link to an absolute path or out of the folder, a device file ...: the "data" filter's refusals
        raise UserError(f"{archive}: {error}; not extracted: use the dataset's official archive") from None
    except CORRUPT as error:
        raise UserError(f"cannot extract {archive} ({first_line(error)}): the archive is corrupt or incomplete; "
                        "download it again") from None
    except OSError as error:
        raise UserError(f"cannot extract {archive} into {out} ({first_line(error)}); free space or choose another "
                        "--out") from None


def _check_inside(archive, name, out, root):
    if not os.path.realpath(os.path.join(out, name)).startswith(root + os.sep):
        raise UserError(f"{archive} holds {name}, outside the output folder; not extracted")


def run(opt):
    if os.path.exists(opt.out) and not os.path.isdir(opt.out):
        raise UserError(f"--out {opt.out} is a file, not a folder; give a new or existing folder")
    os.makedirs(opt.out, exist_ok=True)
    for archive in opt.archives:
        print(f"extracting {archive} into {opt.out}")
        extract(archive, opt.out)

    return report(opt.name, opt.out, opt.kernels, opt.partial)


def main(argv=None):
    parser = CommandParser(command="python -m datasets.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=datasets.names(), help="the dataset")
    parser.add_argument("archives", nargs="+", metavar="ARCHIVE", help="its official archives or files")
    parser.add_argument("--out", required=True, help="the folder to extract into (then --source of main.py)")
    parser.add_argument("--kernels", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes")
    parser.add_argument("--partial", action="store_true", help="a subset: do not compare with the published counts")
    holds = run_command(run, parser.parse_args(argv))
    sys.exit(0 if holds else 1)


if __name__ == "__main__":
    main()
