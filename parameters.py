"""The command line, grouped by concern. `parse(argv)` returns the namespace main.py runs on.

Flag names follow the paper's released scripts (Revisiting-DML's names). Each criterion's and miner's
hyperparameters become `--loss_<criterion>_<name>` / `--miner_<miner>_<name>` flags with
the defaults the criterion declares, so there is one place for each default.
"""
import argparse
import contextlib
import json
import os
import re
import sys

import yaml

import architectures
import criteria
import datasampler
import datasets
import diffusion
import evaluation
import evaluation.protocols
import training
from errors import CommandParser, UserError
from registry import UnknownName

# Flags that do not change what a run computes: a resumed run may set them differently, and runs
# that differ only in them (and in --seed) are repeats of one experiment for evaluation.summarize.
OPERATIONAL_FLAGS = {"resume", "resume_force", "overwrite", "kernels", "gpu", "log_online", "log_tensorboard",
                     "project", "group", "save_path", "savename", "source", "pretrained_weights", "compile",
                     "channels_last", "no_reports", "save_checkpoints", "progress_every", "train_list", "test_list",
                     "val_list"}


def build_parser():
    parser = CommandParser(
        description="Deep metric learning with progressive self-distillation (PSD) and "
                    "online batch diffusion (OBDP).", command="python main.py")

    run = parser.add_argument_group("run")
    run.add_argument("--dataset", default="cub200", choices=datasets.names())
    run.add_argument("--source", default=None,
                     help="dataset folder (the one holding images/), or its parent")
    run.add_argument("--save_path", default="Training_Results", help="runs are stored under it")
    run.add_argument("--savename", default="", help="run folder name (default: dataset and time)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--gpu", type=int, nargs="+", default=None,
                     help="CUDA device (default: the first GPU if there is one, else the CPU; "
                          "under torchrun: the local rank's)")
    run.add_argument("--kernels", type=int, default=min(8, os.cpu_count() or 1), help="dataloader workers")
    run.add_argument("--n_epochs", type=int, default=150)
    run.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_DIR",
                     help="continue a run from its checkpoint_last.pth (default: --save_path/--savename, "
                          "else the newest run there)")
    run.add_argument("--resume_force", action="store_true", help="resume even if the flags differ from the run's")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run folder of that name")
    run.add_argument("--save_checkpoints", default="last_and_best", choices=["last_and_best", "last", "best", "none"],
                     help="which checkpoints a run keeps: checkpoint_last.pth (to resume) and the best ones; "
                          "none for sweeps and tests (the tables and summary are written all the same)")
    run.add_argument("--save_every", type=int, default=0,
                     help="also keep checkpoint_epoch_<N>.pth every N epochs (0: only last and best)")
    run.add_argument("--progress_every", type=float, default=60.0, metavar="SECONDS",
                     help="without a terminal (a log file), print a progress line this often (0: every step)")
    run.add_argument("--deterministic", action="store_true",
                     help="deterministic algorithms only (torch.use_deterministic_algorithms and cuDNN)")
    run.add_argument("--skip_nonfinite", action="store_true",
                     help="skip batches whose loss is not finite (and count them) instead of stopping")

    speed = parser.add_argument_group("speed (multi-GPU: launch with torchrun --nproc_per_node N main.py ...)")
    speed.add_argument("--amp", default=None, choices=["bf16", "fp16"],
                       help="mixed precision for the networks (fp16 with gradient scaling); the loss, the "
                            "diffusion and the metrics stay float32")
    speed.add_argument("--channels_last", action="store_true", help="channels-last memory format for the network")
    speed.add_argument("--compile", action="store_true", help="torch.compile the student and teacher forward")

    optimisation = parser.add_argument_group("optimisation")
    optimisation.add_argument("--optim", default="adam", choices=list(training.OPTIMIZERS),
                              help="adamw: decoupled weight decay, none on biases, norms, position embeddings and "
                                   "class tokens (the ViT recipe)")
    optimisation.add_argument("--lr", type=float, default=1e-5)
    optimisation.add_argument("--fc_lr", type=float, default=-1,
                              help="learning rate of the embedding layer; negative: same as --lr")
    optimisation.add_argument("--decay", type=float, default=4e-4, help="weight decay")
    optimisation.add_argument("--scheduler", default="step", choices=["step", "cosine", "none"],
                              help="step: x --gamma at the epochs --tau; cosine: linear warm-up over --warmup_epochs, "
                                   "then half a cosine to 0 at the last step, stepped every step")
    optimisation.add_argument("--tau", type=int, nargs="*", default=[],
                              help="epochs at which the learning rate is multiplied by --gamma")
    optimisation.add_argument("--gamma", type=float, default=0.3)
    optimisation.add_argument("--warmup_epochs", type=float, default=0.0,
                              help="--scheduler cosine: epochs (fractions allowed) of linear warm-up")
    optimisation.add_argument("--layer_decay", type=float, default=1.0,
                              help="layer-wise learning-rate decay: a backbone block at depth l of L trains at "
                                   "lr * layer_decay^(L+1-l); 1: off")
    optimisation.add_argument("--clip_grad", type=float, default=0.0,
                              help="clip the gradient norm of the trained parameters to this; 0: off")

    network = parser.add_argument_group("network")
    network.add_argument("--arch", default="resnet50_frozen_normalize", type=_arch,
                         help=f"one of {', '.join(architectures.names())}, or timm:<model name> (e.g. "
                              f"timm:vit_small_patch16_224.dino), plus any of "
                              f"{', '.join('_' + s for s in architectures.SUFFIXES)}")
    network.add_argument("--embed_dim", type=int, default=128)
    network.add_argument("--not_pretrained", action="store_true", help="random initialisation")
    network.add_argument("--pretrained_weights", default=None,
                         help="ImageNet weights file (default: the torch hub cache)")
    network.add_argument("--pooling", default="auto", choices=architectures.POOLINGS,
                         help="what feeds the head: auto (the backbone's own: a ViT's class token, a CNN's average "
                              "map), avg (average of the feature map, + max with _double), class_token, patch_mean")
    network.add_argument("--image_size", type=int, default=None,
                         help="input size (crop) instead of the backbone's pretrained one; a ViT's position "
                              "embedding is resampled to it")
    network.add_argument("--head", default="linear", choices=list(architectures.HEADS),
                         help="embedding head: linear projection (the paper's), + BatchNorm1d, "
                              "two-layer MLP, or residual MLP block + projection")
    network.add_argument("--freeze_backbone_epochs", type=int, default=0, metavar="N",
                         help="train only the head for the first N epochs (backbone weights and BatchNorm "
                              "statistics fixed)")

    data = parser.add_argument_group("data")
    data.add_argument("--bs", type=int, default=112, help="batch size")
    data.add_argument("--samples_per_class", type=int, default=2)
    data.add_argument("--data_sampler", default="class_random", choices=datasampler.names(),
                      help="class_random: the released sampler (classes and images drawn with replacement); "
                           "m_per_class: distinct classes and images; random: ignores classes")
    data.add_argument("--augmentation", default="base", choices=datasets.AUGMENTATIONS)
    data.add_argument("--use_tv_split", action="store_true",
                      help="hold out part of the training data as a validation split")
    data.add_argument("--tv_split_perc", type=float, default=0.8, help="share of training data kept for training")
    data.add_argument("--tv_split_by_samples", action="store_true",
                      help="split every class's images instead of splitting the classes")
    add_list_flags(data)
    data.add_argument("--on_bad_image", default="fail", choices=datasets.BAD_IMAGE_POLICIES,
                      help="a file that is not a readable image stops the run, or is skipped and counted")

    loss = parser.add_argument_group("criterion")
    loss.add_argument("--loss", default="multisimilarity", type=_loss,
                      help=f"one of {', '.join(criteria.names())}; each also as <name>_obd_sd (the released scripts' "
                           "name, the same loss), or pml:<LossClass> of pytorch-metric-learning")
    loss.add_argument("--batch_mining", default=None, choices=sorted(criteria.MINERS),
                      help="miner of tuple losses (default: the criterion's own)")
    loss.add_argument("--distance", default=None, choices=sorted(criteria.distances.DISTANCES),
                      help="distance of the distance-based tuple losses (default: euclidean)")
    for name, criterion_class in sorted({**criteria.CRITERIA, **criteria.EXTERNAL}.items()):
        _add_hyperparameters(loss, f"loss_{name}", criterion_class.hyperparameters)
    for name, miner_class in sorted(criteria.MINERS.items()):
        _add_hyperparameters(loss, f"miner_{name}", miner_class.hyperparameters)

    distillation = parser.add_argument_group("self-distillation")
    distillation.add_argument("--PSD", action="store_true", help="progressive self-distillation")
    distillation.add_argument("--OBDP", action="store_true", help="diffuse the PSD target over the batch")
    distillation.add_argument("--kd_tau", type=float, default=1.0, help="distillation temperature")
    distillation.add_argument("--kd_lambda", type=float, default=75.0, help="distillation weight")
    distillation.add_argument("--diffusion_w", type=float, default=0.99, help="diffusion weight w in [0, 1)")
    distillation.add_argument("--diffusion_tau", type=float, default=1.0, help="affinity graph temperature")
    distillation.add_argument("--diffusion_norm", default="softmax", choices=diffusion.NORMALISATIONS,
                              help="graph normalisation: row softmax (released) or D^-1/2 A D^-1/2")
    distillation.add_argument("--diffusion_k", type=int, default=None,
                              help="keep each sample's k nearest neighbours in the graph (default: dense)")
    distillation.add_argument("--diffusion_knn", default="symmetric", choices=diffusion.KNN_MODES,
                              help="kNN edge kept when either end chose it, or only when both did")
    distillation.add_argument("--diffusion_gamma", type=float, default=3.0,
                              help="affinity exponent of the symmetric graph, A = max(T, 0)^gamma")
    distillation.add_argument("--diffusion_solver", default="solve", choices=diffusion.SOLVERS,
                              help="direct linear solve, fixed-point iteration, or conjugate gradient")
    distillation.add_argument("--diffusion_iters", type=int, default=1000, help="iteration cap of iterative/cg")
    distillation.add_argument("--diffusion_tol", type=float, default=1e-6, help="tolerance of iterative/cg")

    evaluation_group = parser.add_argument_group("evaluation and logging")
    evaluation_group.add_argument("--evaluation_metrics", nargs="+", default=None,
                                  help=f"any of {evaluation.usage()}; "
                                       "default: e_recall@1,2,4,8 (SOP: 1,10,100,1000) and nmi")
    evaluation_group.add_argument("--storage_metrics", nargs="+", default=["e_recall@1"],
                                  help="a best checkpoint is kept for each")
    evaluation_group.add_argument("--log_online", action="store_true",
                                  help="log to Weights & Biases (key from WANDB_API_KEY; WANDB_MODE=offline works)")
    evaluation_group.add_argument("--log_tensorboard", action="store_true",
                                  help="log the same scalars and report images offline to <run folder>/tensorboard "
                                       "(needs the tensorboard package)")
    evaluation_group.add_argument("--evaluation_protocol", default=None, choices=evaluation.protocols.PROTOCOLS,
                                  help="self: each evaluation split against itself; query_gallery: the query images "
                                       "against the gallery (inshop); train_gallery: evaluation images against the "
                                       "training images of their classes (seen classes). Default: the dataset's "
                                       "(query_gallery for inshop, else self)")
    evaluation_group.add_argument("--evaluation_diffusion", action="store_true",
                                  help="also report each kNN-based metric after diffusion re-ranking, "
                                       "as <metric>+diffusion")
    evaluation_group.add_argument("--evaluation_diffusion_k", type=int, default=20,
                                  help="neighbours per item in the re-ranking's mutual kNN graph")
    evaluation_group.add_argument("--evaluation_diffusion_w", type=float, default=0.99,
                                  help="diffusion weight of the re-ranking")
    evaluation_group.add_argument("--evaluation_diffusion_shortlist", type=int, default=100,
                                  help="neighbours of each query that the re-ranking re-orders")
    evaluation_group.add_argument("--no_reports", action="store_true",
                                  help="skip the PNG reports (recall curves, retrieval grid, t-SNE, similarity and "
                                       "confusion matrices) written at the end of the run")
    evaluation_group.add_argument("--project", default="OBD-SD", help="W&B project")
    evaluation_group.add_argument("--group", default="", help="W&B group")

    reproduction = parser.add_argument_group("configuration files, finetuning and class hold-out")
    reproduction.add_argument("--config", default=None, metavar="FILE",
                              help="YAML or JSON file of flag values keyed by flag name without the dashes, as in a "
                                   "run's config.json; flags given on the command line override it")
    reproduction.add_argument("--init_from", default=None, metavar="PATH",
                              help="start from the network weights of this checkpoint (a run's .pth or a published "
                                   "net.pth); optimiser, criterion and epochs start afresh")
    reproduction.add_argument("--holdout_classes", type=int, default=0, metavar="N",
                              help="leave the last N training classes out of training (the unseen-class protocol, "
                                   "python -m evaluation.unseen_classes)")
    return parser


def _add_hyperparameters(group, prefix, hyperparameters):
    for param, default in hyperparameters.items():
        flag = f"--{prefix}_{param}"
        if isinstance(default, bool):
            group.add_argument(flag, action="store_true")
        else:
            group.add_argument(flag, type=type(default), default=default)


def _arch(value):
    try:
        name, _ = architectures.parse_arch(value)
        architectures.backbone(name)  # a timm model that timm does not know is refused here
    except (ValueError, UserError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def parse(argv=None, warn=True):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    opt = parser.parse_args(argv)
    if opt.config is not None:
        # The file's values become flags ahead of the command line's, so the command line wins
        # and the file goes through the same types, choices and checks.
        opt = parser.parse_args(_config_arguments(opt.config, parser) + argv)
    # Not stored: a run's config.json holds the values, and resuming compares them, not the file's name.
    del opt.config
    if opt.evaluation_metrics is None:
        opt.evaluation_metrics = evaluation.default_metrics(opt.dataset)
    opt.evaluation_metrics += [m for m in opt.storage_metrics if m not in opt.evaluation_metrics]
    problems = _check(opt)
    if problems:
        parser.error(problems[0])
    # Under torchrun every process parses the flags: the first one speaks for all.
    if warn and os.environ.get("RANK", "0") == "0":
        for warning in _no_effect(opt):
            print(f"warning: {warning}", file=sys.stderr)
    return opt


# How the libraries name the arguments the flags set (their errors name their own arguments).
FLAG_OF_ARGUMENT = {"batch_size": "--bs", "samples_per_class": "--samples_per_class", "seed": "--seed",
                    "sampler": "--data_sampler", "solver": "--diffusion_solver", "norm": "--diffusion_norm"}


def as_flags(message):
    """A library's error message with its arguments named as the flags that set them."""
    return re.sub(r"\b(" + "|".join(FLAG_OF_ARGUMENT) + r")\b", lambda match: FLAG_OF_ARGUMENT[match.group(1)],
                  message)


@contextlib.contextmanager
def errors_as_flags():
    """The UserErrors of the library calls inside, with their arguments named as flags."""
    try:
        yield
    except UserError as error:
        raise UserError(as_flags(str(error))) from None


def check_resumable(saved, config, force, folder):
    """Refuse to resume the run of `saved` (its config.json) with the flags of `config` where they
    differ in anything but OPERATIONAL_FLAGS, unless `force`."""
    saved = canonical(saved)
    differing = sorted(key for key in set(saved) | set(config)
                       if key not in OPERATIONAL_FLAGS and saved.get(key) != config.get(key))
    if differing and not force:
        changes = ", ".join(f"{key}: {saved.get(key)!r} -> {config.get(key)!r}" for key in differing)
        raise UserError(f"the flags differ from the run in {folder} ({changes}); "
                        "repeat its flags or pass --resume_force")


def canonical(config: dict) -> dict:
    """A stored config (a run's config.json) as the parser gives it: each value through its flag's
    type (so -1 and -1.0 of a float flag compare equal), flags added since at their defaults,
    unknown keys and values no flag takes as they are. What compares runs (resume, summaries)
    compares these."""
    parser = build_parser()
    actions = {action.dest: action for action in parser._actions
               if action.option_strings and action.dest not in ("help", "config")}

    def refuse(message):
        raise ValueError(message)

    parser.error = refuse
    as_stored, words = {}, {}
    for key, value in config.items():
        try:
            words[key] = _as_arguments(actions[key], value)
        except (KeyError, ValueError):
            as_stored[key] = value
    try:
        parsed = vars(parser.parse_args([word for key_words in words.values() for word in key_words]))
    except ValueError:  # one value the parser refuses (a choice since removed): each flag alone
        parsed = vars(parser.parse_args([]))
        for key, key_words in words.items():
            try:
                parsed[key] = getattr(parser.parse_args(key_words), key)
            except ValueError:
                as_stored[key] = config[key]
    parsed.pop("config")
    return {**parsed, **as_stored}


def _no_effect(opt):
    """Legal values that change nothing, each as a one-line warning."""
    warnings = []
    fc_lr = opt.fc_lr if opt.fc_lr >= 0 else opt.lr
    if opt.lr == 0:
        warnings.append("--lr 0: the backbone does not train" + ("" if fc_lr else ", nor the embedding layer"))
    late = [milestone for milestone in opt.tau if milestone >= opt.n_epochs]
    if opt.scheduler == "step" and late:
        warnings.append(f"--tau {' '.join(map(str, late))} at or after --n_epochs {opt.n_epochs}: "
                        "the learning rate never steps there")
    if opt.warmup_epochs and opt.scheduler != "cosine":
        warnings.append(f"--warmup_epochs {opt.warmup_epochs:g} warms up --scheduler cosine only; "
                        f"--scheduler {opt.scheduler} ignores it")
    if opt.PSD and opt.n_epochs == 1:
        warnings.append("--PSD with --n_epochs 1: the distillation weight epoch / n_epochs is 0 in the only epoch, "
                        "so it has no effect")
    if opt.OBDP and opt.diffusion_k is not None and opt.diffusion_k >= opt.bs - 1:
        warnings.append(f"--diffusion_k {opt.diffusion_k} with --bs {opt.bs}: every other sample of a batch is a "
                        "neighbour, so the graph is the dense one; drop --diffusion_k")
    return warnings


def _config_arguments(path, parser):
    """The command-line arguments that set the values of the --config file at `path`."""
    values = _read_config(path, parser)
    actions = {action.dest: action for action in parser._actions
               if action.option_strings and action.dest not in ("help", "config")}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        parser.error(f"--config {path}: unknown key(s) {', '.join(unknown)}; keys are flag names without the "
                     "leading --, as in a run's config.json (python main.py --help lists them)")
    arguments = []
    for key, value in values.items():
        try:
            arguments += _as_arguments(actions[key], value)
        except ValueError as error:
            parser.error(f"--config {path}: {key}: {error}; fix the value in the file")
    # The file's arguments alone first, so that a bad value names the file it came from.
    checker = build_parser()
    checker.error = lambda message: parser.error(f"--config {path}: {message}; fix the value in the file")
    checker.parse_args(arguments)
    return arguments


def _read_config(path, parser):
    """The mapping of a YAML (.yaml, .yml) or JSON (.json) file."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".yaml", ".yml", ".json"):
        parser.error(f"--config {path}: the file name must end in .yaml, .yml or .json")
    try:
        with open(path) as handle:
            values = json.load(handle) if extension == ".json" else yaml.safe_load(handle)
    except OSError as error:
        parser.error(f"--config {path}: cannot read it ({error.strerror}); give an existing YAML or JSON file")
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())
        parser.error(f"--config {path} is not valid {'JSON' if extension == '.json' else 'YAML'} ({reason}); "
                     "fix the file")
    if not isinstance(values, dict):
        parser.error(f"--config {path} holds a {type(values).__name__}, not a mapping of flag names to values; "
                     "write one `name: value` per flag")
    return values


def _as_arguments(action, value):
    """The arguments that give `action` the file's `value`; ValueError for a value no argument can give."""
    flag = action.option_strings[-1]
    if action.nargs == 0:
        if not isinstance(value, bool):
            raise ValueError(f"{flag} is a switch, its value must be true or false, not {value!r}")
        return [flag] if value else []
    if value is None:
        if action.default is not None:
            raise ValueError(f"null is not a value of {flag} (default {action.default!r})")
        return []
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        if not all(_is_scalar(item) for item in items):
            raise ValueError(f"{flag} takes a list of plain values, not {value!r}")
        return [flag, *(str(item) for item in items)]
    if not _is_scalar(value):
        raise ValueError(f"{flag} takes one plain value, not {value!r}")
    if action.nargs == "?" and value == action.const:
        return [flag]
    return [f"{flag}={value}"]


def _is_scalar(value):
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _check(opt):
    """Impossible combinations, each as the message argparse prints."""
    problems = []
    positive = {"--n_epochs": opt.n_epochs, "--bs": opt.bs, "--samples_per_class": opt.samples_per_class,
                "--embed_dim": opt.embed_dim, "--kd_tau": opt.kd_tau, "--diffusion_tau": opt.diffusion_tau}
    problems += [f"{flag} must be positive, got {value}" for flag, value in positive.items() if value <= 0]
    not_negative = {"--lr": opt.lr, "--decay": opt.decay, "--seed": opt.seed, "--kd_lambda": opt.kd_lambda}
    problems += [f"{flag} must be 0 or more, got {value}" for flag, value in not_negative.items() if value < 0]
    for check, arguments in ((datasampler.check_batch, (opt.data_sampler, opt.bs, opt.samples_per_class)),
                             (diffusion.check_options, (opt.diffusion_norm, opt.diffusion_solver))):
        try:
            check(*arguments)
        except (UserError, ValueError) as error:
            problems.append(as_flags(str(error)))
    if opt.diffusion_k is not None and opt.diffusion_k < 1:
        problems.append(f"--diffusion_k must be at least 1, got {opt.diffusion_k}")
    if opt.diffusion_iters < 1 or opt.diffusion_tol <= 0:
        problems.append("--diffusion_iters must be at least 1 and --diffusion_tol positive")
    if opt.OBDP and not opt.PSD:
        problems.append("--OBDP diffuses the target of --PSD; add --PSD")
    if not 0 <= opt.diffusion_w < 1:
        problems.append(f"--diffusion_w must lie in [0, 1), got {opt.diffusion_w}")
    if not 0 < opt.tv_split_perc < 1:
        problems.append(f"--tv_split_perc must lie in (0, 1), got {opt.tv_split_perc}")
    if not 0 < opt.layer_decay <= 1:
        problems.append(f"--layer_decay must lie in (0, 1] (1: off), got {opt.layer_decay}")
    if opt.clip_grad < 0:
        problems.append(f"--clip_grad must be 0 (off) or positive, got {opt.clip_grad}")
    if opt.image_size is not None and opt.image_size < 8:
        problems.append(f"--image_size must be at least 8 pixels, got {opt.image_size}")
    if not 0 <= opt.warmup_epochs < opt.n_epochs and opt.scheduler == "cosine":
        problems.append(f"--warmup_epochs must lie in [0, --n_epochs {opt.n_epochs}), got {opt.warmup_epochs}")
    if opt.freeze_backbone_epochs < 0:
        problems.append(f"--freeze_backbone_epochs must be 0 or more, got {opt.freeze_backbone_epochs}")
    if opt.resume is not None and opt.save_checkpoints not in ("last_and_best", "last"):
        problems.append(f"--resume continues from checkpoint_last.pth, which --save_checkpoints "
                        f"{opt.save_checkpoints} does not keep; drop one of them")
    if opt.save_every < 0:
        problems.append(f"--save_every must be 0 (off) or positive, got {opt.save_every}")
    if protocol(opt) == "query_gallery" and datasets.default_protocol(opt.dataset) != "query_gallery":
        problems.append(f"--evaluation_protocol query_gallery needs a dataset with query and gallery images "
                        f"(inshop), not {opt.dataset}")
    if opt.evaluation_diffusion and protocol(opt) != "self":
        problems.append(f"--evaluation_diffusion re-ranks a split against itself; it does not apply to "
                        f"--evaluation_protocol {protocol(opt)}")
    given = [flag for flag in ("train_list", "test_list", "val_list") if getattr(opt, flag)]
    if opt.dataset != "list" and given:
        problems.append(f"--{given[0]} names the files of --dataset list; drop it or use --dataset list")
    if opt.dataset == "list" and not (opt.train_list and opt.test_list):
        problems.append("--dataset list needs --train_list FILE and --test_list FILE (and optionally --val_list)")
    if opt.progress_every < 0:
        problems.append(f"--progress_every must be 0 (every step) or more seconds, got {opt.progress_every}")
    if opt.kernels < 0:
        problems.append("--kernels must be 0 (load in the main process) or more")
    if opt.holdout_classes < 0:
        problems.append(f"--holdout_classes must be 0 (off) or more, got {opt.holdout_classes}")
    if opt.init_from is not None and not os.path.isfile(opt.init_from):
        problems.append(f"--init_from {opt.init_from}: no such file; give a checkpoint written by main.py "
                        "(RUN/checkpoint_last.pth or RUN/checkpoint_best_<metric>.pth) or a published net.pth")
    if opt.init_from is not None and opt.pretrained_weights is not None:
        problems.append("--init_from replaces the ImageNet weights of --pretrained_weights; drop one of them")
    try:
        evaluation.check_names(opt.evaluation_metrics)
    except ValueError as error:
        problems.append(str(error))
    for check, value, flag in ((criteria.check_miner, opt.batch_mining, "--batch_mining"),
                               (criteria.check_distance, opt.distance, "--distance")):
        try:
            check(opt.loss, value)
        except criteria.OptionError as error:
            problems.append(error.naming(flag))
    return problems


def criterion_arguments(opt, n_classes):
    """The keyword arguments of criteria.select that the flags give (the namespace unpacked here)."""
    cls = criteria.criterion_class(opt.loss)
    prefix = "loss_pml" if cls is criteria.EXTERNAL["pml"] else f"loss_{criteria.base_name(opt.loss)}"
    miner = criteria.check_miner(opt.loss, opt.batch_mining)
    return {"loss": opt.loss, "miner": miner, "distance": opt.distance, "n_classes": n_classes,
            "embed_dim": opt.embed_dim, "distillation": distillation(opt),
            "hyperparameters": {name: getattr(opt, f"{prefix}_{name}") for name in cls.hyperparameters},
            "miner_hyperparameters": {name: getattr(opt, f"miner_{miner}_{name}")
                                      for name in criteria.MINERS[miner].hyperparameters} if miner else {}}


def distillation(opt):
    """The criteria.Distillation of --PSD (and --OBDP), or None without --PSD."""
    if not opt.PSD:
        return None
    return criteria.Distillation(kd_tau=opt.kd_tau, kd_lambda=opt.kd_lambda, n_epochs=opt.n_epochs,
                                 diffusion_w=opt.diffusion_w if opt.OBDP else 0.0, diffusion_tau=opt.diffusion_tau,
                                 norm=opt.diffusion_norm, k=opt.diffusion_k, knn=opt.diffusion_knn,
                                 gamma=opt.diffusion_gamma, solver=opt.diffusion_solver, tol=opt.diffusion_tol,
                                 max_iters=opt.diffusion_iters)


def add_list_flags(parser):
    """--train_list, --test_list, --val_list: the files of --dataset list, for every command that reads a dataset."""
    parser.add_argument("--train_list", default=None, metavar="FILE",
                        help="--dataset list: the training images, one 'path label' a line (paths relative to "
                             "the list)")
    parser.add_argument("--test_list", default=None, metavar="FILE", help="--dataset list: the test images")
    parser.add_argument("--val_list", default=None, metavar="FILE",
                        help="--dataset list: validation images (checkpoints are then selected on them)")


def dataset_lists(opt):
    """The list files of --dataset list, for datasets.select."""
    return {"train_list": opt.train_list, "test_list": opt.test_list, "val_list": opt.val_list}


def protocol(opt):
    """The evaluation protocol of the run: --evaluation_protocol, else the dataset's."""
    return opt.evaluation_protocol or datasets.default_protocol(opt.dataset)


def reranking(opt):
    """The diffusion re-ranking of evaluation.evaluator.Evaluator, or None without --evaluation_diffusion."""
    if not opt.evaluation_diffusion:
        return None
    return {"k": opt.evaluation_diffusion_k, "w": opt.evaluation_diffusion_w,
            "shortlist": opt.evaluation_diffusion_shortlist,
            "label": f"--evaluation_diffusion_k {opt.evaluation_diffusion_k}"}


def _loss(value):
    """The argparse type of --loss: a registered name, <name>_obd_sd or pml:<LossClass>."""
    try:
        criteria.criterion_class(value)
    except UnknownName:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(criteria.names())}, "
                                         "each also as <name>_obd_sd, or pml:<LossClass> of "
                                         "pytorch-metric-learning)") from None
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value
