"""Check a dataset before training on it: its layout, its counts and every image.

    python -m datasets.verify --dataset NAME --source PATH [--kernels N] [--partial]

It finds the layout, counts the images and classes of each split, checks that every listed file
exists and decodes (in --kernels processes, with a progress bar), counts duplicate images (the
same file twice, or files of one content: datasets.duplicates) and the conflicts among them (an
image under two classes), compares the counts with the published ones where they are known,
prints one table, and exits with status 0 only when everything holds (1 when something does
not, 2 when the layout itself is not found).
--partial checks a subset of a dataset: its counts are not compared with the published ones.
"""
import os
import sys

import datasets
from errors import CommandParser, run_command


def verify(dataset, source, workers=0, partial=False, lists=None):
    """(table rows, everything holds): one row a split, its images decoded and counted."""
    # the duplicates named, not left out: the counts are the listed ones, as published
    splits = datasets.select(dataset, source, on_bad_image="skip", duplicates="warn", workers=workers, lists=lists)
    published = {} if partial else datasets.facts(dataset).published
    rows, holds = [], True
    for split, data in splits.items():
        images, classes = len(data) + len(data.bad_files), len(set(data.labels.tolist()))
        expected = published.get(split, (None, None))
        problems = [f"{len(data.bad_files)} bad files (first: {data.bad_files[0]})"] if data.bad_files else []
        if data.duplicates:
            problems.append(f"{len(data.duplicates)} duplicates (first: {data.duplicates[0]})")
        if data.conflicts:
            problems.append(f"{len(data.conflicts)} of them under another class than their original (first: "
                            f"{data.conflicts[0]})")
        for name, found, wanted in (("images", images, expected[0]), ("classes", classes, expected[1])):
            if wanted is not None and found != wanted:
                problems.append(f"{found:,} {name}, {wanted:,} published")
        holds &= not problems
        rows.append({"split": split, "images": images, "classes": classes,
                     "published": " / ".join("-" if value is None else f"{value:,}" for value in expected),
                     "check": "; ".join(problems) or "ok"})
    return rows, holds


def report(dataset, source, workers=0, partial=False, lists=None):
    """Verify and print the table; whether everything holds."""
    rows, holds = verify(dataset, source, workers, partial, lists)
    listed = [path for path in (lists or {}).values() if path]
    if dataset == "list":
        print(f"{dataset} of {', '.join(listed)}:")
    else:
        print(f"{dataset}:" if datasets.facts(dataset).no_source else f"{dataset} at {source}:")
    print(f"{'split':>8}  {'images':>8}  {'classes':>8}  {'published (images / classes)':>30}  check")
    for row in rows:
        print(f"{row['split']:>8}  {row['images']:>8}  {row['classes']:>8}  {row['published']:>30}  {row['check']}")
    print("everything holds" if holds else "something does not hold: see the check column")
    return holds


def run(opt):
    return report(opt.dataset, opt.source, opt.kernels, opt.partial,
                  {name: getattr(opt, name) for name in datasets.LIST_INPUTS})


def build_parser():
    parser = CommandParser(command="python -m datasets.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=datasets.names())
    parser.add_argument("--source", default=None, help="the dataset folder, or its parent")
    for name, description in datasets.LIST_INPUTS.items():
        parser.add_argument(f"--{name}", default=None, metavar="FILE", help=f"--dataset list: {description}")
    parser.add_argument("--kernels", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes")
    parser.add_argument("--partial", action="store_true", help="a subset: do not compare with the published counts")
    return parser


def main(argv=None):
    holds = run_command(run, build_parser().parse_args(argv))
    sys.exit(0 if holds else 1)


if __name__ == "__main__":
    main()
