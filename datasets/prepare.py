"""Turn a dataset's official archives into a folder its loader reads, then verify it.

    python -m datasets.prepare NAME ARCHIVE... --out DIR [--kernels N] [--partial]

Each ARCHIVE (.tar, .tar.gz / .tgz, .zip) is extracted into DIR; any other file (e.g.
cars_annos.mat) is copied there, or where its dataset's loader looks for it
(list_eval_partition.txt into Eval/). Nothing is downloaded: docs/datasets.md says where each
dataset's archives come from. Extraction never writes outside DIR. Then datasets.verify runs on
DIR, and its exit status is this command's.
"""
import os
import shutil
import sys
import tarfile
import zipfile

import datasets
from datasets.verify import report
from errors import CommandParser, UserError, run_command

# loose files that the loaders read from a sub-folder of the dataset folder
PLACES = {"list_eval_partition.txt": "Eval"}


def extract(archive, out):
    """Extract (or copy) `archive` into `out`, refusing members that would land outside it."""
    if not os.path.isfile(archive):
        raise UserError(f"no file {archive}; give the dataset's archives (.tar, .tgz, .zip) or its files")
    root = os.path.realpath(out)
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if not os.path.realpath(os.path.join(out, member.name)).startswith(root + os.sep):
                    raise UserError(f"{archive} holds {member.name}, outside the output folder; not extracted")
            tar.extractall(out, filter="data")
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as package:
            for name in package.namelist():
                if not os.path.realpath(os.path.join(out, name)).startswith(root + os.sep):
                    raise UserError(f"{archive} holds {name}, outside the output folder; not extracted")
            package.extractall(out)
    else:
        folder = os.path.join(out, PLACES.get(os.path.basename(archive), ""))
        os.makedirs(folder, exist_ok=True)
        shutil.copy2(archive, folder)


def run(opt):
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
