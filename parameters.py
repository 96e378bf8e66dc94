"""The command line of main.py, grouped by concern: `parse(argv)` returns the run's settings
(training.RunSettings), the one value a run is made from. The argparse namespace ends here.

Flag names follow the paper's released scripts (Revisiting-DML's names); each is the key of its
setting in a run's record (config.json, training/settings.py), so `--config config.json` runs a
run again. Defaults come from the settings' dataclasses, one place for each. Each criterion's and
miner's hyperparameters become `--loss_<criterion>_<name>` / `--miner_<miner>_<name>` flags, each
diffusion graph's and solver's parameters `--diffusion_<name>` (and `--evaluation_diffusion_<name>`
for the test-time re-ranking), with the defaults their constructors declare.

A --config file (YAML or JSON) holds flag values keyed by flag name; `include: FILE` (or a list of
files, relative to the including file) reads other files first, the including file's own values
winning, so a recipe is written once and each run states only what differs.
"""
import argparse
import json
import os
import sys

import yaml

import architectures
import criteria
import datasampler
import datasets
import diffusion
import evaluation
from errors import CommandParser, SettingError, UserError
from evaluation.protocols import PROTOCOLS
from registry import UnknownName
from training import RunSettings, from_record, to_record
from training.folder import CHECKPOINT_POLICIES
from training.optimisation import OPTIMIZERS, SCHEDULES
from training.settings import AMP_MODES, DIFFUSION_PREFIXES

# The defaults of every setting, by flag; the evaluation metrics and protocol are None there: the dataset's.
DEFAULTS = {**to_record(RunSettings()), "evaluation_metrics": None, "evaluation_protocol": None}
INCLUDE = "include"
TRAINING_DIFFUSION_HELP = {
    "w": "diffusion weight w in [0, 1)",
    "norm": "graph normalisation: row softmax (released) or D^-1/2 A D^-1/2",
    "k": "keep each sample's k nearest neighbours in the graph (default: dense)",
    "knn": "kNN edge kept when either end chose it, or only when both did",
    "solver": "direct linear solve, fixed-point iteration, or conjugate gradient",
    "tau": "affinity graph temperature (softmax graph)",
    "gamma": "affinity exponent of the symmetric graph, A = max(T, 0)^gamma",
    "tol": "tolerance of iterative/cg",
    "iters": "iteration cap of iterative/cg",
}
RERANKING_HELP = {name: f"the re-ranking's {text.replace(' (default: dense)', '')}"
                  for name, text in TRAINING_DIFFUSION_HELP.items()}
RERANKING_HELP["k"] = "neighbours per item in the re-ranking's kNN graph"


def build_parser():
    parser = CommandParser(
        description="Deep metric learning with progressive self-distillation (PSD) and "
                    "online batch diffusion (OBDP).", command="python main.py")

    run = parser.add_argument_group("run")
    run.add_argument("--dataset", default=DEFAULTS["dataset"], choices=datasets.names())
    run.add_argument("--source", default=DEFAULTS["source"],
                     help="dataset folder (the one holding images/), or its parent")
    run.add_argument("--save_path", default=DEFAULTS["save_path"], help="runs are stored under it")
    run.add_argument("--savename", default=DEFAULTS["savename"], help="run folder name (default: dataset and time)")
    run.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    run.add_argument("--gpu", type=int, nargs="+", default=DEFAULTS["gpu"],
                     help="CUDA device (default: the first GPU if there is one, else the CPU; "
                          "under torchrun: the local rank's)")
    run.add_argument("--kernels", type=int, default=DEFAULTS["kernels"], help="dataloader workers")
    run.add_argument("--threads", type=int, default=DEFAULTS["threads"],
                     help="CPU threads of torch (default: OMP_NUM_THREADS, else the cores this process may use)")
    run.add_argument("--n_epochs", type=int, default=DEFAULTS["n_epochs"])
    run.add_argument("--resume", nargs="?", const="", default=DEFAULTS["resume"], metavar="RUN_DIR",
                     help="continue a run from its checkpoint_last.pth (default: --save_path/--savename, "
                          "else the newest run there)")
    run.add_argument("--resume_force", action="store_true", help="resume even if the settings differ from the run's")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run folder of that name")
    run.add_argument("--save_checkpoints", default=DEFAULTS["save_checkpoints"], choices=CHECKPOINT_POLICIES,
                     help="which checkpoints a run keeps: checkpoint_last.pth (to resume) and the best ones; "
                          "none for sweeps and tests (the tables and summary are written all the same)")
    run.add_argument("--save_every", type=int, default=DEFAULTS["save_every"],
                     help="also keep checkpoint_epoch_<N>.pth every N epochs (0: only last and best)")
    run.add_argument("--progress_every", type=float, default=DEFAULTS["progress_every"], metavar="SECONDS",
                     help="without a terminal (a log file), print a progress line this often (0: every step)")
    run.add_argument("--deterministic", action="store_true",
                     help="deterministic algorithms only (torch.use_deterministic_algorithms and cuDNN)")
    run.add_argument("--skip_nonfinite", action="store_true",
                     help="skip batches whose loss is not finite (and count them) instead of stopping")

    speed = parser.add_argument_group("speed (multi-GPU: launch with torchrun --nproc_per_node N main.py ...)")
    speed.add_argument("--amp", default=DEFAULTS["amp"], choices=AMP_MODES,
                       help="mixed precision for the networks (fp16 with gradient scaling); the loss, the "
                            "diffusion and the metrics stay float32")
    speed.add_argument("--channels_last", action="store_true", help="channels-last memory format for the network")
    speed.add_argument("--compile", action="store_true", help="torch.compile the student and teacher forward")

    optimisation = parser.add_argument_group("optimisation")
    optimisation.add_argument("--optim", default=DEFAULTS["optim"], choices=OPTIMIZERS.names(),
                              help="adamw: decoupled weight decay, none on biases, norms, position embeddings and "
                                   "class tokens (the ViT recipe)")
    optimisation.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    optimisation.add_argument("--fc_lr", type=float, default=DEFAULTS["fc_lr"],
                              help="learning rate of the embedding layer; negative: same as --lr")
    optimisation.add_argument("--decay", type=float, default=DEFAULTS["decay"], help="weight decay")
    optimisation.add_argument("--scheduler", default=DEFAULTS["scheduler"], choices=SCHEDULES.names(),
                              help="step: x --gamma at the epochs --tau; cosine: linear warm-up over --warmup_epochs, "
                                   "then half a cosine to 0 at the last step, stepped every step")
    optimisation.add_argument("--tau", type=int, nargs="*", default=DEFAULTS["tau"],
                              help="epochs at which the learning rate is multiplied by --gamma")
    optimisation.add_argument("--gamma", type=float, default=DEFAULTS["gamma"])
    optimisation.add_argument("--warmup_epochs", type=float, default=DEFAULTS["warmup_epochs"],
                              help="--scheduler cosine: epochs (fractions allowed) of linear warm-up")
    optimisation.add_argument("--layer_decay", type=float, default=DEFAULTS["layer_decay"],
                              help="layer-wise learning-rate decay: a backbone block at depth l of L trains at "
                                   "lr * layer_decay^(L+1-l); 1: off")
    optimisation.add_argument("--clip_grad", type=float, default=DEFAULTS["clip_grad"],
                              help="clip the gradient norm of the trained parameters to this; 0: off")

    network = parser.add_argument_group("network")
    network.add_argument("--arch", default=DEFAULTS["arch"], type=_arch,
                         help=f"one of {', '.join(architectures.names())}, or timm:<model name> (e.g. "
                              f"timm:vit_small_patch16_224.dino), plus any of "
                              f"{', '.join('_' + s for s in architectures.SUFFIXES)}")
    network.add_argument("--embed_dim", type=int, default=DEFAULTS["embed_dim"])
    network.add_argument("--not_pretrained", action="store_true", help="random initialisation")
    network.add_argument("--pretrained_weights", default=DEFAULTS["pretrained_weights"],
                         help="ImageNet weights file (default: the torch hub cache)")
    network.add_argument("--pooling", default=DEFAULTS["pooling"], choices=architectures.POOLINGS,
                         help="what feeds the head: auto (the backbone's own: a ViT's class token, a CNN's average "
                              "map), avg (average of the feature map, + max with _double), class_token, patch_mean")
    network.add_argument("--image_size", type=int, default=DEFAULTS["image_size"],
                         help="input size (crop) instead of the backbone's pretrained one; a ViT's position "
                              "embedding is resampled to it")
    network.add_argument("--head", default=DEFAULTS["head"], choices=list(architectures.HEADS),
                         help="embedding head: linear projection (the paper's), + BatchNorm1d, "
                              "two-layer MLP, or residual MLP block + projection")
    network.add_argument("--freeze_backbone_epochs", type=int, default=DEFAULTS["freeze_backbone_epochs"], metavar="N",
                         help="train only the head for the first N epochs (backbone weights and BatchNorm "
                              "statistics fixed)")

    data = parser.add_argument_group("data")
    data.add_argument("--bs", type=int, default=DEFAULTS["bs"], help="batch size")
    data.add_argument("--samples_per_class", type=int, default=DEFAULTS["samples_per_class"])
    data.add_argument("--data_sampler", default=DEFAULTS["data_sampler"], choices=datasampler.names(),
                      help="class_random: the released sampler (classes and images drawn with replacement); "
                           "m_per_class: distinct classes and images; random: ignores classes")
    data.add_argument("--augmentation", default=DEFAULTS["augmentation"], choices=datasets.AUGMENTATIONS)
    data.add_argument("--use_tv_split", action="store_true",
                      help="hold out part of the training data as a validation split")
    data.add_argument("--tv_split_perc", type=float, default=DEFAULTS["tv_split_perc"],
                      help="share of training data kept for training")
    data.add_argument("--tv_split_by_samples", action="store_true",
                      help="split every class's images instead of splitting the classes")
    data.add_argument("--folds", type=int, default=DEFAULTS["folds"], metavar="K",
                      help="class-disjoint cross-validation: cut the training classes into K folds, validate on "
                           "--fold and train on the others (0: off)")
    data.add_argument("--fold", type=int, default=DEFAULTS["fold"], help="the validating fold, 0 to K-1")
    add_list_flags(data)
    data.add_argument("--on_bad_image", default=DEFAULTS["on_bad_image"], choices=datasets.BAD_IMAGE_POLICIES,
                      help="a file that is not a readable image stops the run, or is skipped and counted")
    data.add_argument("--duplicates", default=DEFAULTS["duplicates"], choices=datasets.DUPLICATE_POLICIES,
                      help="an image listed twice, or files of one content, within a split or between splits that "
                           "meet (train and the others, query and gallery): stop, rank them as listed with a "
                           "warning (as the released code does; the paper recipes' choice), drop the copies and "
                           "count them, or keep them without looking")

    loss = parser.add_argument_group("criterion")
    loss.add_argument("--loss", default=DEFAULTS["loss"], type=_loss,
                      help=f"one of {', '.join(criteria.names())}; each also as <name>_obd_sd (the released scripts' "
                           "name, the same loss), or pml:<LossClass> of pytorch-metric-learning; several joined by + "
                           "(multisimilarity+softmax) are their weighted sum, each with its own flags")
    loss.add_argument("--loss_weights", type=float, nargs="*", default=DEFAULTS["loss_weights"], metavar="W",
                      help="the weight of each criterion of --loss a+b, in order (default: 1 each); "
                           "one loss takes one weight")
    loss.add_argument("--batch_mining", default=DEFAULTS["batch_mining"], choices=sorted(criteria.MINERS),
                      help="miner of tuple losses (default: the criterion's own)")
    loss.add_argument("--distance", default=DEFAULTS["distance"], choices=sorted(criteria.distances.DISTANCES),
                      help="distance of the distance-based tuple losses (default: euclidean)")
    loss.add_argument("--xbm_size", type=int, default=DEFAULTS["xbm_size"],
                      help="cross-batch memory (XBM): compare each batch with the last N training images "
                           "(pair and triplet losses; 0: the batch alone)")
    loss.add_argument("--xbm_start", type=int, default=DEFAULTS["xbm_start"],
                      help="steps of warm-up before the memory is used and filled")
    for name, criterion_class in sorted({**criteria.CRITERIA, **criteria.EXTERNAL}.items()):
        _add_hyperparameters(loss, f"loss_{name}", criterion_class.hyperparameters)
    for name, miner_class in sorted(criteria.MINERS.items()):
        _add_hyperparameters(loss, f"miner_{name}", miner_class.hyperparameters)

    distillation = parser.add_argument_group("self-distillation")
    distillation.add_argument("--PSD", action="store_true", help="progressive self-distillation")
    distillation.add_argument("--OBDP", action="store_true", help="diffuse the PSD target over the batch")
    distillation.add_argument("--kd_tau", type=float, default=DEFAULTS["kd_tau"], help="distillation temperature")
    distillation.add_argument("--kd_lambda", type=float, default=DEFAULTS["kd_lambda"], help="distillation weight")
    _add_diffusion_flags(distillation, "diffusion_", TRAINING_DIFFUSION_HELP)

    evaluation_group = parser.add_argument_group("evaluation and logging")
    evaluation_group.add_argument("--evaluation_metrics", nargs="+", default=None,
                                  help=f"any of {evaluation.usage()}; "
                                       "default: e_recall@1,2,4,8 (SOP: 1,10,100,1000) and nmi")
    evaluation_group.add_argument("--storage_metrics", nargs="+", default=DEFAULTS["storage_metrics"],
                                  help="a best checkpoint is kept for each")
    evaluation_group.add_argument("--log_online", action="store_true",
                                  help="log to Weights & Biases (key from WANDB_API_KEY; WANDB_MODE=offline works)")
    evaluation_group.add_argument("--log_tensorboard", action="store_true",
                                  help="log the same scalars and report images offline to <run folder>/tensorboard "
                                       "(needs the tensorboard package)")
    evaluation_group.add_argument("--evaluation_protocol", default=DEFAULTS["evaluation_protocol"],
                                  choices=PROTOCOLS.names(),
                                  help="self: each evaluation split against itself; query_gallery: the query images "
                                       "against the gallery (inshop); train_gallery: evaluation images against the "
                                       "training images of their classes (seen classes). Default: the dataset's "
                                       "(query_gallery for inshop, else self)")
    evaluation_group.add_argument("--evaluation_diffusion", action="store_true",
                                  help="also report each kNN-based metric after diffusion re-ranking, "
                                       "as <metric>+diffusion")
    evaluation_group.add_argument("--evaluation_diffusion_shortlist", type=int,
                                  default=DEFAULTS["evaluation_diffusion_shortlist"],
                                  help="neighbours of each query that the re-ranking re-orders")
    _add_diffusion_flags(evaluation_group, "evaluation_diffusion_", RERANKING_HELP)
    evaluation_group.add_argument("--no_reports", action="store_true",
                                  help="skip the PNG reports (recall curves, retrieval grid, t-SNE, similarity and "
                                       "confusion matrices) written at the end of the run")
    evaluation_group.add_argument("--project", default=DEFAULTS["project"], help="W&B project")
    evaluation_group.add_argument("--group", default=DEFAULTS["group"], help="W&B group")

    reproduction = parser.add_argument_group("configuration files, finetuning and class hold-out")
    reproduction.add_argument("--config", default=None, metavar="FILE",
                              help="YAML or JSON file of flag values keyed by flag name without the dashes, as in a "
                                   "run's config.json; flags given on the command line override it")
    reproduction.add_argument("--init_from", default=None, metavar="PATH",
                              help="start from the network weights of this checkpoint (a run's .pth or a published "
                                   "net.pth); optimiser, criterion and epochs start afresh")
    reproduction.add_argument("--holdout_classes", type=int, default=DEFAULTS["holdout_classes"], metavar="N",
                              help="leave the last N training classes out of training (the unseen-class protocol, "
                                   "python -m studies.unseen_classes)")
    return parser


def _add_hyperparameters(group, prefix, hyperparameters):
    for param, default in hyperparameters.items():
        flag = f"--{prefix}_{param}"
        if isinstance(default, bool):
            group.add_argument(flag, action="store_true")
        else:
            group.add_argument(flag, type=type(default), default=default)


def _add_diffusion_flags(group, prefix, helps):
    """--<prefix><setting> for each diffusion.Settings field and each graph's and solver's
    parameter, defaulting to the settings the prefix stands for (the distillation's, the re-ranking's)."""
    owner = next(key for key, value in DIFFUSION_PREFIXES.items() if value == prefix)
    instance = getattr(getattr(RunSettings(), owner[0]), owner[1])
    choices = {"norm": diffusion.GRAPHS.names(), "knn": list(diffusion.KNN_MODES),
               "solver": diffusion.SOLVERS.names()}
    types = {"w": float, "k": int}
    for name in ("w", "norm", "k", "knn", "solver"):
        group.add_argument(f"--{prefix}{name}", type=types.get(name, str), choices=choices.get(name),
                           default=getattr(instance, name), help=helps.get(name))
    for name, default in diffusion.parameters().items():
        group.add_argument(f"--{prefix}{name}", type=type(default), default=instance.options.get(name, default),
                           help=helps.get(name))


def _arch(value):
    try:
        name, _ = architectures.parse_arch(value)
        architectures.backbone(name)  # a timm model that timm does not know is refused here
    except (ValueError, UserError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def _loss(value):
    """The argparse type of --loss: a registered name, <name>_obd_sd or pml:<LossClass>, or several
    of them joined by + (a mixture; a criterion named twice is refused by LossSettings)."""
    parts = value.split(criteria.mixture.SEPARATOR)
    for part in parts:
        try:
            criteria.criterion_class(part)
        except UnknownName:
            where = f" in the mixture {value!r}" if len(parts) > 1 else ""
            raise argparse.ArgumentTypeError(f"invalid choice: {part!r}{where} (choose from "
                                             f"{', '.join(criteria.names())}, each also as <name>_obd_sd, or "
                                             "pml:<LossClass> of pytorch-metric-learning; join several with +)"
                                             ) from None
        except UserError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return value


def parse(argv=None, warn=True, defaults=None) -> RunSettings:
    """The run settings of the command line `argv` (default: sys.argv[1:]); a mistake is one line
    and exit status 2, a legal value that changes nothing a warning line. `defaults` ({flag without
    dashes: value}) are a command's own defaults (a study's protocol)."""
    parser = build_parser()
    parser.set_defaults(**(defaults or {}))
    argv = sys.argv[1:] if argv is None else list(argv)
    opt = parser.parse_args(argv)
    if opt.config is not None:
        # The file's values become flags ahead of the command line's, so the command line wins
        # and the file goes through the same types, choices and checks.
        opt = parser.parse_args(_config_arguments(opt.config, parser) + argv)
    values = vars(opt)
    # Not a setting: a run's config.json holds the values, and resuming compares them, not the file's name.
    del values["config"]
    if values["init_from"] is not None and not os.path.isfile(values["init_from"]):
        parser.error(f"--init_from {values['init_from']}: no such file; give a checkpoint written by main.py "
                     "(RUN/checkpoint_last.pth or RUN/checkpoint_best_<metric>.pth) or a published net.pth")
    settings = settings_of(values, parser.error)
    # Under torchrun every process parses the flags: the first one speaks for all.
    if warn and os.environ.get("RANK", "0") == "0":
        for warning in _no_effect(settings):
            print(f"warning: {warning}", file=sys.stderr)
    return settings


def settings_of(values: dict, error=None) -> RunSettings:
    """The RunSettings of flag values ({flag without dashes: value}); a setting that cannot work goes
    to `error` (default: raised as a UserError) as one line naming the flags."""
    try:
        return from_record(values)
    except SettingError as problem:
        message = flags_named(problem)
    if error is None:
        raise UserError(message)
    error(message)


def flags_named(error: SettingError) -> str:
    """A SettingError's message with each setting it names as its flag."""
    return error.naming(lambda key: f"--{key}")


def command_line(values: dict) -> list[str]:
    """The command-line words that give the flags `values` ({flag without dashes: value}), as
    --config would: a switch alone when true, a list as its items."""
    actions = _actions(build_parser())
    return [word for key, value in values.items() for word in _as_arguments(actions[key], value)]


def add_list_flags(parser):
    """--train_list, --test_list, --val_list: the files of --dataset list, for every command that reads a dataset."""
    for name, description in datasets.LIST_INPUTS.items():
        parser.add_argument(f"--{name}", default=None, metavar="FILE", help=f"--dataset list: {description}")


def dataset_lists(opt) -> dict:
    """The list files that the flags of add_list_flags name, by input name."""
    return {name: getattr(opt, name) for name in datasets.LIST_INPUTS}


def _no_effect(settings: RunSettings):
    """Legal values that change nothing, each as a one-line warning."""
    warnings = []
    optimisation, training, distillation = settings.optimisation, settings.training, settings.distillation
    if optimisation.lr == 0:
        warnings.append("--lr 0: the backbone does not train" + ("" if optimisation.head_lr else
                                                                  ", nor the embedding layer"))
    late = [milestone for milestone in optimisation.tau if milestone >= training.n_epochs]
    if optimisation.scheduler == "step" and late:
        warnings.append(f"--tau {' '.join(map(str, late))} at or after --n_epochs {training.n_epochs}: "
                        "the learning rate never steps there")
    if optimisation.warmup_epochs and optimisation.scheduler != "cosine":
        warnings.append(f"--warmup_epochs {optimisation.warmup_epochs:g} warms up --scheduler cosine only; "
                        f"--scheduler {optimisation.scheduler} ignores it")
    if distillation.PSD and training.n_epochs == 1:
        warnings.append("--PSD with --n_epochs 1: the distillation weight epoch / n_epochs is 0 in the only epoch, "
                        "so it has no effect")
    data = settings.data
    unread = datasets.facts(data.dataset).no_source
    if data.source is not None and unread:
        warnings.append(f"--source {data.source} with --dataset {data.dataset}, which reads no folder ({unread}): "
                        "it has no effect; drop --source")
    if settings.loss.xbm_start and not settings.loss.xbm_size:
        warnings.append(f"--xbm_start {settings.loss.xbm_start} without --xbm_size: there is no memory to warm up; "
                        "add --xbm_size or drop --xbm_start")
    k, bs = distillation.diffusion.k, settings.batches.bs
    if distillation.OBDP and k is not None and k >= bs - 1:
        warnings.append(f"--diffusion_k {k} with --bs {bs}: every other sample of a batch is a "
                        "neighbour, so the graph is the dense one; drop --diffusion_k")
    return warnings


def _actions(parser):
    return {action.dest: action for action in parser._actions
            if action.option_strings and action.dest not in ("help", "config")}


def _config_arguments(path, parser):
    """The command-line arguments that set the values of the --config file at `path`."""
    values = read_config(path, parser.error)
    actions = _actions(parser)
    # a run's config.json also records the machine it ran on: facts, not flags
    values = {key: value for key, value in values.items() if key != "environment"}
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


def read_config(path, error, including=()):
    """The values of a YAML (.yaml, .yml) or JSON (.json) file, its includes (`include: FILE` or a
    list, relative to the file) read first and overridden by the file's own values."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".yaml", ".yml", ".json"):
        error(f"--config {path}: the file name must end in .yaml, .yml or .json")
    try:
        with open(path) as handle:
            values = json.load(handle) if extension == ".json" else yaml.safe_load(handle)
    except OSError as problem:
        error(f"--config {path}: cannot read it ({problem.strerror}); give an existing YAML or JSON file")
    except (json.JSONDecodeError, yaml.YAMLError) as problem:
        reason = " ".join(str(problem).split())
        error(f"--config {path} is not valid {'JSON' if extension == '.json' else 'YAML'} ({reason}); fix the file")
    if not isinstance(values, dict):
        error(f"--config {path} holds a {type(values).__name__}, not a mapping of flag names to values; "
              "write one `name: value` per flag")
    included = values.pop(INCLUDE, [])
    merged = {}
    for name in included if isinstance(included, list) else [included]:
        if not isinstance(name, str):
            error(f"--config {path}: {INCLUDE} takes a file name or a list of them, not {name!r}")
        target = os.path.normpath(os.path.join(os.path.dirname(path), name))
        if os.path.abspath(target) in including or os.path.abspath(target) == os.path.abspath(path):
            error(f"--config {path} includes {name}, which includes it again; remove one of the includes")
        merged = _merged(merged, read_config(target, error, (*including, os.path.abspath(path))))
    return _merged(merged, values)


def _merged(first, second):
    """`first` updated by `second`, mappings within them merged the same way (a study file's space)."""
    merged = dict(first)
    for key, value in second.items():
        merged[key] = _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


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
        items = value if isinstance(value, (list, tuple)) else [value]
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
