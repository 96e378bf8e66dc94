"""Test a trained network on a dataset's test split: Recall@k, NMI and MAP@R, printed and saved as JSON.

The paper's published checkpoints, by the flags of the paper's README:

    python Test_pretrained_models.py --dataset cub200 --source $datapath --arch resnet50_frozen_normalize \
        --embed_dim 128 --PSD --OBDP [--selected_by Recall]

read <results_root>/<selected_by>/<folder>/<dataset>/net.pth, where folder is PSD for --PSD alone and
OBDSD_d<embed_dim> (OBDSD_d128, OBDSD_d512) for --PSD --OBDP. Any other checkpoint, in the paper's format
or this codebase's:

    python Test_pretrained_models.py --dataset cub200 --source $datapath --checkpoint PATH
"""
import json
import os
import sys

import numpy as np
import torch

import datasets
import distributed
import parameters
from errors import CommandParser, SettingError, UserError, counted, run_command
from evaluation import evaluator, networks
from evaluation.protocols import PROTOCOLS, unsuited

PUBLISHED_EMBED_DIMS = (128, 512)
# The paper's 512-d OBD-SD runs pool with average + max (the `_double` arch of the released runs).
PUBLISHED_ARCHS = {"PSD": networks.PAPER_ARCH, "OBDSD_d128": networks.PAPER_ARCH,
                   "OBDSD_d512": networks.PAPER_ARCH + "_double"}


def build_parser():
    parser = CommandParser(command="python Test_pretrained_models.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cub200", choices=datasets.names())
    parser.add_argument("--source", default=None, help="the dataset folder, or its parent")
    parameters.add_list_flags(parser)
    parser.add_argument("--checkpoint", default=None, help="a checkpoint file; default: the published one the "
                                                           "--PSD/--OBDP/--embed_dim/--selected_by flags name")
    parser.add_argument("--results_root", default="Training_Results", help="where the published checkpoints lie")
    parser.add_argument("--selected_by", default="Recall", choices=["Recall", "NMI"],
                        help="published checkpoint chosen by best Recall@1 or best NMI")
    parser.add_argument("--PSD", action="store_true", help="a checkpoint trained with progressive self-distillation")
    parser.add_argument("--OBDP", action="store_true", help="... and online batch diffusion (OBD-SD)")
    parser.add_argument("--arch", default=None, help=f"default: the checkpoint's own, or {networks.PAPER_ARCH} "
                                                     "(+ _double for OBDSD_d512) for the paper's files")
    parser.add_argument("--embed_dim", type=int, default=None, help="default: the checkpoint's own")
    parser.add_argument("--evaluation_metrics", nargs="+", default=None,
                        help="default: the dataset's Recall@k, nmi and mAP@R")
    parser.add_argument("--evaluation_protocol", default=None, choices=PROTOCOLS.names(),
                        help="what the test images are ranked against: themselves (self), the gallery "
                             "(query_gallery, inshop) or the training images (train_gallery, for a dataset whose "
                             "train and test share classes); default: the dataset's")
    # published checkpoints on the published benchmarks: ranked as their authors' code ranked them
    parser.add_argument("--duplicates", default="warn", choices=datasets.DUPLICATE_POLICIES,
                        help="an image listed twice, or files of one content, in the test split or between query "
                             "and gallery: rank them as listed with a warning (as the released code does), stop, "
                             "drop the copies, or keep them without looking")
    parser.add_argument("--bs", type=int, default=112, help="batch size")
    parser.add_argument("--kernels", type=int, default=min(8, os.cpu_count() or 1), help="dataloader workers")
    parser.add_argument("--gpu", type=int, default=0, help="CUDA device; CPU when none exists")
    parser.add_argument("--out", default=None, help="JSON file of the results (default: next to the checkpoint, "
                                                    "<checkpoint>_test.json)")
    parser.add_argument("--save_embeddings", default=None, help="also save the test embeddings to this .npy file")
    return parser


def published_checkpoint(results_root, selected_by, dataset, psd, obdp, embed_dim):
    """(path, folder) of the paper's checkpoint that the flags name."""
    if not psd:
        raise UserError("the published checkpoints are PSD and OBD-SD models: add --PSD (and --OBDP), "
                        "or give any checkpoint with --checkpoint")
    if obdp:
        embed_dim = embed_dim or PUBLISHED_EMBED_DIMS[0]
        if embed_dim not in PUBLISHED_EMBED_DIMS:
            raise UserError(f"OBD-SD checkpoints were published for --embed_dim 128 and 512, not {embed_dim}")
        folder = f"OBDSD_d{embed_dim}"
    else:
        if embed_dim not in (None, PUBLISHED_EMBED_DIMS[0]):
            raise UserError(f"PSD checkpoints were published for --embed_dim 128 only, not {embed_dim}")
        folder = "PSD"
    path = os.path.join(results_root, selected_by, folder, dataset, "net.pth")
    if not os.path.isfile(path):
        raise UserError(f"no published checkpoint at {path}; put the released Training_Results there "
                        "(or pass --results_root), or give a file with --checkpoint")
    return path, folder


def run(opt):
    if opt.OBDP and not opt.PSD:
        raise UserError("--OBDP diffuses the target of --PSD; add --PSD")
    facts = datasets.facts(opt.dataset)
    try:
        protocol = opt.evaluation_protocol or facts.default_protocol
        # before the data and the checkpoint are read: a protocol that ranks no test split of the dataset
        problem = unsuited(protocol, opt.dataset, facts.splits,
                           {name: datasets.facts(name).splits for name in datasets.names()})
        if problem:
            raise SettingError(problem, ["evaluation_protocol", "dataset"])
        settings = evaluator.EvaluationSettings(
            evaluation_metrics=opt.evaluation_metrics or list(dict.fromkeys([*facts.metrics, "mAP@R"])),
            storage_metrics=(), evaluation_protocol=protocol)
        data = datasets.DataSettings(opt.dataset, opt.source, duplicates=opt.duplicates,
                                     **parameters.dataset_lists(opt))
    except SettingError as error:
        raise UserError(parameters.flags_named(error)) from None
    path, arch = opt.checkpoint, opt.arch
    if path is None:
        path, folder = published_checkpoint(opt.results_root, opt.selected_by, opt.dataset, opt.PSD, opt.OBDP,
                                             opt.embed_dim)
        arch = arch or PUBLISHED_ARCHS[folder]
        if arch != PUBLISHED_ARCHS[folder]:
            print(f"note: the paper trained {folder} with --arch {PUBLISHED_ARCHS[folder]}", file=sys.stderr)
    checkpoint = networks.load(path, arch, opt.embed_dim)
    device = torch.device(f"cuda:{opt.gpu}" if torch.cuda.is_available() else "cpu")
    distributed.use_cpu_threads()
    # the input the network was trained on, also where the dataset fixes its own crop (digits)
    splits = datasets.load(data, workers=opt.kernels, **networks.input_preprocessing(checkpoint))
    duplicates = datasets.duplicates.note(splits, opt.duplicates)
    if duplicates:
        print(duplicates, file=sys.stderr)
    try:
        evaluate = evaluator.setup(splits, settings, batch_size=opt.bs, workers=opt.kernels, rows=["test"])
    except SettingError as error:
        raise UserError(parameters.flags_named(error)) from None
    (ranking,) = evaluate.rankings
    protocol = settings.evaluation_protocol
    result = evaluate(checkpoint.network.to(device), device)["test"]
    evaluated = evaluate.splits
    metrics, features, test = result.metrics, result.features, evaluated[ranking.query]
    against = "" if ranking.gallery is None else \
        f" against the {len(evaluated[ranking.gallery])} {ranking.gallery} images"
    print(f"{path} ({checkpoint.kind} format, --arch {checkpoint.arch} --embed_dim {checkpoint.embed_dim}), "
          f"{opt.dataset} {ranking.query} split, {len(test)} images, "
          f"{counted(test.n_classes, 'class', 'classes')}{against}")
    for name, value in metrics.items():
        print(f"{name:>16}  {value:.4f}")
    out = opt.out or os.path.splitext(path)[0] + "_test.json"
    result = {"checkpoint": path, "format": checkpoint.kind, "arch": checkpoint.arch,
              "embed_dim": checkpoint.embed_dim, "dataset": opt.dataset, "split": "test", "protocol": protocol,
              "images": len(test), "classes": test.n_classes, "metrics": metrics,
              "duplicates": datasets.duplicates.summary(splits, opt.duplicates)}
    try:
        with open(out, "w") as handle:
            json.dump(result, handle, indent=2)
        if opt.save_embeddings:
            np.save(opt.save_embeddings, features)
    except OSError as error:
        raise UserError(f"cannot write {error.filename}: {error.strerror}; choose another path") from None
    print(f"results written to {out}")
    return result


def main(argv=None):
    opt = build_parser().parse_args(argv)
    run_command(run, opt)


if __name__ == "__main__":
    main()
