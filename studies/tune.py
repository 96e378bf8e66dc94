"""Hyperparameter search under an equal budget, with class-disjoint cross-validation, on Optuna.

    python -m studies.tune STUDY.yaml [--study DIR] [--trials N] [--timeout SECONDS] [--folds K]
                           [--objective mAP@R] [--pruner median|hyperband|none] [--sampler_seed S]
                           [--storage URL] [--study_name NAME] [--workers W] [--final_seeds 0 1 2 3 4]
                           [--no_final] [--dry-run] [main.py flags ...]

STUDY.yaml holds the search space (`space:`, a distribution for each main.py flag), the run it
tunes (`run:`, a main.py --config file, relative to the study file; main.py flags given on the
command line are added to it), any of this command's options by name, and may `include:` other
study files. The command line overrides the file.

A trial trains K models, one a fold: the training classes are cut into K class-disjoint folds,
each model trains on K - 1 of them and is validated on the one left out, and the trial's value
is the mean of the K models' best validation `--objective` ("A Metric Learning Reality Check",
Musgrave et al. 2020). Without folds the run's own validation split (--use_tv_split) serves; an
objective that would read the test split is refused. A seeded TPE sampler picks the trials and
the median (or Hyperband) pruner stops poor ones after any epoch, through training.run's callbacks.

The study lives in an Optuna storage: by default the SQLite file DIR/study.db; for many machines
any Optuna RDB URL (--storage postgresql://...), each machine running this command with the same
--study_name. A worker's trials keep a heartbeat; a trial whose worker died is failed and run
again, and running the command again continues the study. --workers W runs W workers here, each
with its share of the cores.

After the search the best settings are trained on each fold again for every --final_seeds seed,
with their checkpoints, and tested: "separated" (each model alone) and "concatenated" (each seed's
K models' embeddings concatenated), mean and 95% confidence interval.

DIR holds study.db, trials/ (a run folder a trial and fold, its output in trial_<n>.log), final/
(the final runs), best.yaml (main.py --config runs it as it is), final.csv and summary.csv, and
the PNGs history.png, importances.png and parallel_coordinates.png.
"""
import argparse
import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import yaml

import datasets
import distributed
import parameters
import training
from errors import CommandParser, SettingError, UserError, counted, run_command
from evaluation import evaluator, networks
from studies import intervals
from training.run import TrainingFailed, run

PRUNERS = ("median", "hyperband", "none")
DEFAULTS = {"trials": 20, "timeout": None, "folds": 0, "objective": "mAP@R", "pruner": "median", "sampler_seed": 0,
            "storage": None, "study_name": None, "workers": 1, "final_seeds": [0, 1, 2, 3, 4], "no_final": False,
            "heartbeat": 60}
# Settings of a trial's runs that the study chooses, not the tuned run.
STUDY_KEYS = {"save_path", "savename", "resume", "resume_force", "overwrite", "save_checkpoints", "no_reports",
              "storage_metrics", "folds", "fold", "seed", "log_online", "log_tensorboard"}


class OverBudget(Exception):
    """The study has its trials: this worker stops."""


def build_parser():
    # No abbreviations: --fold (main.py's) must not be read as --folds.
    parser = CommandParser(command="python -m studies.tune", description=__doc__.split("\n\n")[0],
                           allow_abbrev=False)
    parser.add_argument("study_file", metavar="STUDY.yaml", help="the search space, the run and the options")
    parser.add_argument("--study", default=None, metavar="DIR",
                        help="the study folder (default: Training_Results/studies/<study file name>)")
    parser.add_argument("--trials", type=int, default=None, help=f"trials in all (default {DEFAULTS['trials']})")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="start no trial after this long (default: none)")
    parser.add_argument("--folds", type=int, default=None, metavar="K",
                        help="class-disjoint folds of the training classes; 0: the run's validation split")
    parser.add_argument("--objective", default=None,
                        help=f"validation metric to maximise (default {DEFAULTS['objective']})")
    parser.add_argument("--pruner", default=None, choices=PRUNERS, help="stops poor trials after an epoch (median)")
    parser.add_argument("--sampler_seed", type=int, default=None, help="seed of the TPE sampler (default 0)")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="an Optuna RDB URL shared by workers on many machines (default: DIR/study.db)")
    parser.add_argument("--study_name", default=None, help="the study's name in the storage (default: DIR's name)")
    parser.add_argument("--workers", type=int, default=None, help="workers on this machine, sharing its cores")
    parser.add_argument("--final_seeds", type=int, nargs="*", default=None,
                        help="seeds of the final runs of the best settings (default 0 1 2 3 4; none: no final)")
    parser.add_argument("--no_final", action="store_true",
                        help="search only (for the workers of the other machines)")
    parser.add_argument("--heartbeat", type=float, default=None, metavar="SECONDS",
                        help="a dead worker's trial is failed and run again after two heartbeats (default 60)")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true", help="print what the study would do")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    return parser


# ------------------------------------------------------------------------------------------------ the plan


@dataclasses.dataclass
class Plan:
    """What the study does: the options, the tuned run's settings and the search space."""
    options: dict
    base: training.RunSettings
    space: dict  # {flag: distribution}
    folder: str
    storage: str
    name: str
    threads: int

    @property
    def folds(self):
        return self.options["folds"]

    def record(self, values, fold, **study):
        """The record of one run: the tuned run with `values`, at `fold`, with the study's settings."""
        record = {**training.to_record(self.base), **values, **study}
        record["storage_metrics"] = [self.options["objective"]]
        record["evaluation_metrics"] = list(dict.fromkeys([*record["evaluation_metrics"], self.options["objective"]]))
        record.update(folds=self.folds, fold=fold if self.folds else 0, no_reports=True, resume=None, overwrite=True,
                      log_online=False, log_tensorboard=False)
        if self.options["workers"] > 1:
            record["kernels"] = min(record["kernels"], self.threads)
        return record


def make_plan(opt, rest):
    """The plan of the command line, every input checked; a mistake is a UserError naming it."""
    study_file = read_study_file(opt.study_file)
    options = {key: getattr(opt, key) if getattr(opt, key) is not None and key != "no_final" else
               study_file.get(key, default) for key, default in DEFAULTS.items()}
    options["no_final"] = opt.no_final or bool(study_file.get("no_final", False))
    unknown = sorted(set(study_file) - set(DEFAULTS) - {"space", "run"})
    if unknown:
        raise UserError(f"{opt.study_file}: unknown key(s) {', '.join(unknown)}; a study file holds space, run "
                        f"and the options {', '.join(DEFAULTS)}")
    if options["pruner"] not in PRUNERS:
        raise UserError(f"{opt.study_file}: pruner {options['pruner']!r}; choose one of {', '.join(PRUNERS)}")
    for key in ("trials", "workers"):
        if not isinstance(options[key], int) or options[key] < 1:
            raise UserError(f"--{key} must be at least 1, got {options[key]}")
    run_argv = (["--config", os.path.join(os.path.dirname(opt.study_file), study_file["run"])]
                if "run" in study_file else []) + list(rest)
    base = parameters.parse(run_argv)
    space = check_space(study_file.get("space"), base, opt.study_file)
    check_objective(options, base)
    check_folds(options, base, read_data=not opt.dry_run)
    folder = opt.study or os.path.join("Training_Results", "studies",
                                       os.path.splitext(os.path.basename(opt.study_file))[0])
    storage = options["storage"] or f"sqlite:///{os.path.abspath(os.path.join(folder, 'study.db'))}"
    name = options["study_name"] or os.path.basename(os.path.normpath(folder))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Plan(options, base, space, folder, storage, name, max(1, cores // options["workers"]))


def read_study_file(path):
    if not os.path.isfile(path):
        raise UserError(f"no study file at {path}; give a YAML file with space: (and run:)")

    def error(message):
        raise UserError(message.replace("--config", "study file"))

    return parameters.read_config(path, error)


def check_space(space, base, path):
    """{flag: distribution} of the space, each flag known and each bound a valid value of the flag."""
    if not isinstance(space, dict) or not space:
        raise UserError(f"{path}: space: maps main.py flags to distributions, e.g. lr: {{low: 1.0e-6, high: "
                        "1.0e-4, log: true}; it is missing or empty")
    actions = {action.dest: action for action in parameters.build_parser()._actions if action.option_strings}
    checked = {}
    for flag, distribution in space.items():
        if flag not in actions or flag in STUDY_KEYS | {"config", "help"}:
            raise UserError(f"{path}: space: unknown or untunable flag {flag}; give main.py flags without the "
                            "leading -- (python main.py --help lists them)")
        kind = actions[flag].type if actions[flag].type in (int, float) else None
        if not isinstance(distribution, dict) or not ({"low", "high"} <= set(distribution)
                                                      or set(distribution) == {"choices"}):
            raise UserError(f"{path}: space: {flag}: give {{low: L, high: H}} (and log: true, step: S) or "
                            f"{{choices: [...]}}, not {distribution!r}")
        if "choices" in distribution:
            values = list(distribution["choices"])
            if not values:
                raise UserError(f"{path}: space: {flag}: choices is empty")
        else:
            if kind is None:
                raise UserError(f"{path}: space: {flag} takes no number; give {{choices: [...]}}")
            extra = sorted(set(distribution) - {"low", "high", "log", "step"})
            if extra:
                raise UserError(f"{path}: space: {flag}: unknown key(s) {', '.join(extra)}; use low, high, log, step")
            low, high = distribution["low"], distribution["high"]
            if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (low, high)) \
                    or not low < high or (kind is int and not (float(low).is_integer() and float(high).is_integer())):
                raise UserError(f"{path}: space: {flag}: low {low!r} and high {high!r} must be "
                                f"{'integers' if kind is int else 'numbers'} with low < high")
            if distribution.get("log") and low <= 0:
                raise UserError(f"{path}: space: {flag}: a log distribution needs low > 0, got {low}")
            values = [kind(low), kind(high)]
        for value in values:
            try:
                training.from_record({**training.to_record(base), flag: value})
            except SettingError as error:
                raise UserError(f"{path}: space: {flag}: {value!r} is not a value the flag takes "
                                f"({parameters.flags_named(error)}); narrow the distribution") from None
        checked[flag] = {**distribution, "type": "categorical" if "choices" in distribution else kind.__name__}
    return checked


def check_objective(options, base):
    objective = options["objective"]
    try:
        evaluator.EvaluationSettings(evaluation_metrics=(objective,))
    except SettingError as error:
        raise UserError(f"--objective {objective}: {error}") from None
    if options["folds"] == 0 and not base.data.use_tv_split and not base.data.val_list:
        raise UserError(f"the objective {objective} would be measured on the test split: give --folds K "
                        "(class-disjoint cross-validation) or tune a run with --use_tv_split")


def check_folds(options, base, read_data=True):
    """The folds cut the training classes: as many folds as classes at most (which `read_data` reads
    the dataset's lists to check)."""
    folds = options["folds"]
    if not folds:
        return
    if base.data.use_tv_split:
        raise UserError("--folds cuts the validation split out of the training classes; the tuned run has "
                        "--use_tv_split too: drop one of them")
    if not read_data:
        return
    try:
        datasets.load(dataclasses.replace(base.data, folds=folds, fold=0), workers=0, **base.model.preprocessing())
    except SettingError as error:
        raise UserError(parameters.flags_named(error)) from None


# ------------------------------------------------------------------------------------------------ the search


def optuna_quietly():
    """Optuna, its experimental-feature warnings (the heartbeat, the plots) and its info logging off."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_of(plan):
    """The plan's Optuna storage, with heartbeats and the retry of a dead worker's trial; a UserError
    when it cannot be reached."""
    optuna = optuna_quietly()
    heartbeat = max(1, round(plan.options["heartbeat"]))
    options = {"connect_args": {"connect_timeout": 10}} if plan.storage.startswith("postgresql") else {}
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(
                plan.storage, engine_kwargs=options, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
        except Exception as error:  # noqa: BLE001  sqlalchemy and the drivers fail in many ways
            # Workers started together race to create the tables: the loser tries again.
            if attempt == 2:
                raise UserError(f"cannot open the study storage {redacted(plan.storage)} ({first_line(error)}); "
                                "check the URL, the server and its database") from None
            time.sleep(1 + attempt)


# how a refusal names each key of identity(plan) that differs ("made with another number of folds")
IDENTITY_WORDS = {"folds": "number of folds", "run": "run settings"}


def identity(plan):
    """What a study was made for: a study of that name made for anything else is refused."""
    return {"space": json.dumps(plan.space, sort_keys=True), "objective": plan.options["objective"],
            "folds": plan.folds, "run": json.dumps(run_identity(plan.base), sort_keys=True)}


def check_existing(plan):
    """A UserError when the storage cannot be reached or holds the study made for another search."""
    optuna = optuna_quietly()

    if plan.storage.startswith("sqlite:///") and not os.path.exists(plan.storage.removeprefix("sqlite:///")):
        return
    try:
        study = optuna.load_study(study_name=plan.name, storage=storage_of(plan))
    except KeyError:
        return
    differing = [key for key, value in identity(plan).items() if study.user_attrs.get(key) != value]
    if differing:
        what = " and ".join(IDENTITY_WORDS.get(key, key) for key in differing)
        raise UserError(f"the study {plan.name} in {redacted(plan.storage)} was made with another {what}; give "
                        "another --study_name (or --study), or the study's own settings")


def open_study(plan):
    """The Optuna study of the plan, made or loaded."""
    optuna = optuna_quietly()

    # One worker draws reproducibly from the seed; workers draw apart (else their first, random trials
    # would be the same): a local worker by its index, one sharing a server's study by its process too.
    seed = plan.options["sampler_seed"] + (plan.options.get("worker") or 0)
    if plan.options["storage"] is not None:
        seed += os.getpid()
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=3),
              "hyperband": optuna.pruners.HyperbandPruner(),
              "none": optuna.pruners.NopPruner()}[plan.options["pruner"]]
    study = optuna.create_study(study_name=plan.name, storage=storage_of(plan), sampler=sampler, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    if not study.user_attrs:
        for key, value in identity(plan).items():
            study.set_user_attr(key, value)
    return study


def run_identity(settings):
    """The tuned run's record without what the study sets and what does not change a computation."""
    return {key: value for key, value in training.to_record(settings).items()
            if key not in training.OPERATIONAL | STUDY_KEYS}


def redacted(url):
    """A storage URL without its password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def suggest(trial, space):
    """The flags a trial tries, drawn from the space."""
    values = {}
    for flag, distribution in space.items():
        if distribution["type"] == "categorical":
            values[flag] = trial.suggest_categorical(flag, distribution["choices"])
        elif distribution["type"] == "int":
            values[flag] = trial.suggest_int(flag, int(distribution["low"]), int(distribution["high"]),
                                             step=int(distribution.get("step", 1)), log=bool(distribution.get("log")))
        else:
            values[flag] = trial.suggest_float(flag, float(distribution["low"]), float(distribution["high"]),
                                               step=distribution.get("step"), log=bool(distribution.get("log")))
    return values


def objective_of(plan):
    optuna = optuna_quietly()

    objective, n_epochs = plan.options["objective"], plan.base.training.n_epochs

    def objective_function(trial):
        if over_budget(trial, plan.options["trials"]):
            trial.set_user_attr("over_budget", True)
            raise OverBudget()
        values = suggest(trial, plan.space)
        scores = []
        log = os.path.join(plan.folder, "trials", f"trial_{trial.number:04d}.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        for fold in range(max(plan.folds, 1)):
            record = plan.record(values, fold, save_path=os.path.join(plan.folder, "trials"),
                                 savename=f"trial_{trial.number:04d}" + (f"_fold{fold}" if plan.folds else ""),
                                 save_checkpoints="none", seed=plan.base.training.seed)

            def report(end, fold=fold):
                trial.report(end.metrics["val"][objective], fold * n_epochs + end.epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at fold {fold}, epoch {end.epoch}")

            with open(log, "a") as output, contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                result = run(settings_of(record), callbacks=[report])
            scores.append(result.selected[objective]["value"])
            trial.set_user_attr(f"fold_{fold}", scores[-1])
        return float(np.mean(scores))

    return objective_function


def settings_of(record):
    try:
        return training.from_record(record)
    except SettingError as error:
        raise SettingError(parameters.flags_named(error)) from None


def over_budget(trial, trials):
    """Whether the study already has its `trials` without this one: the lowest-numbered trials that
    did not fail are the budget, whichever worker runs them."""
    from optuna.trial import TrialState

    alive = sorted(other.number for other in trial.study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)))
    return trial.number in alive and alive.index(trial.number) >= trials


def finished_trials(study):
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def search(plan):
    """This worker's share of the search: trials until the study has its number, or the timeout."""
    import torch

    torch.set_num_threads(plan.threads)
    study = open_study(plan)
    started = time.time()
    deadline = None if plan.options["timeout"] is None else started + plan.options["timeout"]

    def progress(study, trial):
        done = finished_trials(study)
        complete = [other for other in done if other.value is not None and other.state.name == "COMPLETE"]
        best = max(complete, key=lambda other: other.value, default=None)
        durations = [other.duration.total_seconds() for other in done if other.duration is not None]
        left = max(0, plan.options["trials"] - len(done)) * np.mean(durations) / plan.options["workers"] \
            if durations else math.nan
        value = "pruned" if trial.state.name == "PRUNED" else \
            "failed" if trial.value is None else f"{plan.options['objective']} {trial.value:.4f}"
        print(f"trial {trial.number} ({len(done)} of {plan.options['trials']} done): {value}; best "
              + (f"{best.value:.4f} (trial {best.number})" if best else "-")
              + (f", about {format_duration(left)} left" if not math.isnan(left) else ""), flush=True)

    while len(finished_trials(study)) < plan.options["trials"]:
        if deadline is not None and time.time() > deadline:
            break
        try:
            study.optimize(objective_of(plan), n_trials=1, catch=(SettingError, TrainingFailed), callbacks=[progress])
        except OverBudget:
            break
    return study


def format_duration(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def run_workers(plan, argv):
    """--workers W: W processes of this command, each a worker of the same study."""
    processes = [subprocess.Popen([sys.executable, "-m", "studies.tune", *argv, "--worker", str(index)],
                                  env={**os.environ, "OMP_NUM_THREADS": str(plan.threads)})
                 for index in range(plan.options["workers"])]
    failed = [index for index, process in enumerate(processes) if process.wait() != 0]
    if failed:
        raise UserError(f"worker(s) {', '.join(map(str, failed))} stopped with an error (above); run the command "
                        "again to continue the study")


# ------------------------------------------------------------------------------------------------ after the search


def best_settings_file(plan, study):
    """best.yaml: the tuned run with the best trial's flags, for main.py --config."""
    record = {key: value for key, value in {**training.to_record(plan.base), **study.best_trial.params}.items()
              if key not in training.OPERATIONAL | {"folds", "fold"}}
    path = os.path.join(plan.folder, "best.yaml")
    with open(path, "w") as handle:
        handle.write(f"# The best settings of the study {plan.name}: trial {study.best_trial.number}, mean validation "
                     f"{plan.options['objective']} {study.best_value:.4f} over {max(plan.folds, 1)} fold(s).\n"
                     f"#   python main.py --config {path}\n")
        yaml.safe_dump(record, handle, sort_keys=False)
    return path


def final_runs(plan, study):
    """The best settings trained on every fold for every final seed, and tested: (per-model rows,
    summary rows)."""
    objective, seeds = plan.options["objective"], plan.options["final_seeds"]
    folder = os.path.join(plan.folder, "final")
    rows, concatenated_rows = [], []
    for seed in seeds:
        checkpoints = []
        for fold in range(max(plan.folds, 1)):
            name = f"seed{seed}" + (f"_fold{fold}" if plan.folds else "")
            record = plan.record(study.best_trial.params, fold, save_path=folder, savename=name,
                                 save_checkpoints="best", seed=seed)
            with open(os.path.join(folder + ".log"), "a") as output, contextlib.redirect_stdout(output), \
                    contextlib.redirect_stderr(output):
                result = run(settings_of(record))
            test = result.selected[objective]["metrics"]["test"]
            rows.append({"seed": seed, "fold": fold, "run": result.folder, "epoch": result.selected[objective]["epoch"],
                         **test})
            checkpoints.append(os.path.join(result.folder, f"checkpoint_best_{objective}.pth"))
        if plan.folds:
            concatenated_rows.append({"seed": seed, **concatenated_test(plan, checkpoints)})
    metrics = [name for name in rows[0] if name not in ("seed", "fold", "run", "epoch")]
    dim = plan.base.model.embed_dim
    summary = [{"evaluation": f"separated ({dim}-d)", "models": len(rows), **interval_cells(rows, metrics)}]
    if concatenated_rows:
        summary.append({"evaluation": f"concatenated ({dim * plan.folds}-d)", "models": len(concatenated_rows),
                        **interval_cells(concatenated_rows, metrics)})
    return rows, concatenated_rows, summary, metrics


def concatenated_test(plan, checkpoints):
    """The test metrics of the fold models' L2-normalised embeddings concatenated (the Reality Check's
    "concatenated" evaluation)."""
    settings = settings_of(plan.record({}, 0, save_path=plan.folder, savename="unused"))
    data = dataclasses.replace(settings.data, folds=0, fold=0)
    splits = datasets.load(data, workers=settings.training.kernels, **settings.model.preprocessing())
    evaluate = evaluator.setup(splits, settings.evaluation, batch_size=settings.batches.bs,
                               workers=settings.training.kernels, rows=["test"])
    device = distributed.select_device(plan.base.training.gpu)
    parts = [evaluate.embed_splits(networks.load(path).network.to(device), device) for path in checkpoints]
    joined = {split: (np.concatenate([normalised(part[split][0]) for part in parts], axis=1), parts[0][split][1])
              for split in parts[0]}
    return evaluate.of_embeddings(joined)["test"].metrics


def normalised(features):
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def interval_cells(rows, metrics):
    """{metric: mean, metric_low, metric_high, "note"}: the mean and its 95% t-interval over the rows,
    scipy's bounds (which, over few rows, can lie beyond what the metric can take), and the words they
    need beside them (studies.intervals), or ""."""
    from scipy import stats

    cells, bounds = {}, {}
    for name in metrics:
        values = np.array([float(row[name]) for row in rows])
        mean = float(values.mean())
        if len(values) > 1 and values.std() > 0:
            low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
        else:
            low = high = mean
        cells |= {name: mean, f"{name}_low": float(low), f"{name}_high": float(high)}
        bounds[name] = (float(low), float(high))
    notes = [intervals.too_few(len(rows), "t", counted(len(rows), "model", "models")),
             intervals.beyond_range(bounds)]
    return cells | {"note": "; ".join(note for note in notes if note)}


def interval_lines(summary, metrics):
    """The console's final table: a line an evaluation, its n and each metric's mean [interval], and
    the words its interval needs on the line below."""
    lines = []
    for row in summary:
        lines.append(f"  {row['evaluation']:<24} n = {row['models']:<3} " + "  ".join(
            f"{name} {row[name]:.4f} [{row[f'{name}_low']:.4f}, {row[f'{name}_high']:.4f}]" for name in metrics))
        if row["note"]:
            lines.append(f"    note: {row['note']}")
    return lines


def write_csv(path, rows):
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def plots(plan, study):
    """The optimisation history, the parameter importances and the parallel coordinates, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as optuna_plots

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib plots are experimental, and warn about it
        for name, plot in (("history", optuna_plots.plot_optimization_history),
                           ("importances", optuna_plots.plot_param_importances),
                           ("parallel_coordinates", optuna_plots.plot_parallel_coordinate)):
            try:
                axes = plot(study)
            except (ValueError, RuntimeError):  # too few finished trials for it
                continue
            figure = (axes[0] if isinstance(axes, np.ndarray) else axes).figure
            figure.set_size_inches(9, 5)
            figure.tight_layout()
            path = os.path.join(plan.folder, f"{name}.png")
            figure.savefig(path, dpi=110)
            plt.close(figure)
            written.append(os.path.basename(path))
    return written


def finish(plan, study):
    """best.yaml, the plots and, unless --no_final, the final runs and their tables."""
    if not [trial for trial in finished_trials(study) if trial.state.name == "COMPLETE"]:
        raise UserError(f"no trial of the study completed (each failed or was pruned); see "
                        f"{os.path.join(plan.folder, 'trials')}/*.log")
    best = best_settings_file(plan, study)
    print(f"best: trial {study.best_trial.number}, {plan.options['objective']} {study.best_value:.4f}: "
          + " ".join(f"--{key} {value:.4g}" if isinstance(value, float) else f"--{key} {value}"
                     for key, value in study.best_trial.params.items()) + f" ({best})")
    pictures = plots(plan, study)
    if pictures:
        print(f"plots: {', '.join(pictures)}")
    if plan.options["no_final"] or not plan.options["final_seeds"]:
        return
    rows, concatenated_rows, summary, metrics = final_runs(plan, study)
    write_csv(os.path.join(plan.folder, "final.csv"), rows + [{"seed": row["seed"], "fold": "concatenated", **row}
                                                             for row in concatenated_rows])
    write_csv(os.path.join(plan.folder, "summary.csv"), summary)
    print(f"test split, best settings trained on each of {max(plan.folds, 1)} fold(s) x seeds "
          f"{' '.join(map(str, plan.options['final_seeds']))}; mean [95% t-interval] over the n models of a line:")
    print("\n".join(interval_lines(summary, metrics)))
    print(f"tables: {os.path.join(plan.folder, 'final.csv')}, {os.path.join(plan.folder, 'summary.csv')}")


def dry_run(plan):
    trainings = plan.options["trials"] * max(plan.folds, 1)
    finals = 0 if plan.options["no_final"] else len(plan.options["final_seeds"]) * max(plan.folds, 1)
    print(f"study {plan.name} in {redacted(plan.storage)}, folder {plan.folder} (a dry run: nothing is read "
          "but the files, nothing is written)")
    print(f"objective: the mean best validation {plan.options['objective']} over "
          + (f"{plan.folds} class-disjoint folds" if plan.folds else "the run's validation split")
          + f"; TPE sampler (seed {plan.options['sampler_seed']}), {plan.options['pruner']} pruner")
    print(f"{plan.options['trials']} trials: {trainings} trainings of {plan.base.training.n_epochs} epochs; "
          f"then {finals} final trainings (seeds {' '.join(map(str, plan.options['final_seeds']))}); "
          f"{plan.options['workers']} worker(s) here, {plan.threads} thread(s) each")
    print("space:")
    for flag, distribution in plan.space.items():
        shown = distribution["choices"] if distribution["type"] == "categorical" else \
            f"{distribution['type']} in [{distribution['low']}, {distribution['high']}]" + \
            (" (log)" if distribution.get("log") else "")
        print(f"  --{flag}: {shown}")
    example = training.to_record(settings_of(plan.record({}, 0, save_path=os.path.join(plan.folder, "trials"),
                                                         savename="trial_0000")))
    defaults = training.to_record(training.RunSettings())
    shown = {key: value for key, value in example.items() if value != defaults.get(key)
             and key not in training.OPERATIONAL - {"save_path", "savename", "no_reports", "save_checkpoints"}}
    print("a trial's first training: python main.py " + " ".join(parameters.command_line(shown))
          + " " + " ".join(f"--{flag} <x>" for flag in plan.space))


def tune(opt, rest, argv):
    plan = make_plan(opt, rest)
    if opt.dry_run:
        dry_run(plan)
        return plan
    plan.options["worker"] = opt.worker
    check_existing(plan)
    os.makedirs(plan.folder, exist_ok=True)
    if opt.worker is None and plan.options["workers"] > 1:
        open_study(plan)  # made once, before the workers race to make it
        run_workers(plan, argv)
        study = open_study(plan)
    else:
        study = search(plan)
    if opt.worker is not None:
        return plan
    if len(finished_trials(study)) < plan.options["trials"] and plan.options["no_final"]:
        print(f"this worker is done; the study has {len(finished_trials(study))} of {plan.options['trials']} "
              "trials, other workers run the rest")
        return plan
    if len(finished_trials(study)) < plan.options["trials"] and plan.options["timeout"] is None:
        raise UserError(f"the study has {len(finished_trials(study))} of {plan.options['trials']} trials; other "
                        "workers are running the rest: run the command again when they are done")
    finish(plan, study)
    return plan


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    opt, rest = build_parser().parse_known_args(argv)
    run_command(tune, opt, rest, argv)


if __name__ == "__main__":
    main()
