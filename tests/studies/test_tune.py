"""python -m studies.tune on digits: a study on SQLite completes its trials and trains its best
settings; pruning stops a trial through training.run's callbacks; two workers share a study on a
real PostgreSQL server, and a killed worker's trial is run again; bad input is one line and
creates nothing."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from errors import UserError
from studies import tune
from tests import program
from tests.postgres import postgres_url  # noqa: F401  (a fixture)
from training.folder import read_csv

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = {"dataset": "digits", "arch": "resnet18_frozen_normalize", "not_pretrained": True, "embed_dim": 16,
       "bs": 50, "samples_per_class": 10, "lr": 1.0e-4, "n_epochs": 1, "kernels": 0,
       "evaluation_metrics": ["mAP@R", "e_recall@1"]}
SPACE = {"loss_multisimilarity_pos_weight": {"low": 0.5, "high": 5.0, "log": True},
         "loss_multisimilarity_thresh": {"low": 0.2, "high": 0.8}}


def study_file(folder, run=None, space=None, **options):
    """A study file and its run file in `folder`; returns the study file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.yaml").write_text(yaml.safe_dump(run or RUN))
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({"run": "run.yaml", "space": space or SPACE, **options}))
    return str(path)


def trials_of(url, name):
    optuna = tune.optuna_quietly()
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


@pytest.mark.slow
def test_a_digits_study_completes_its_trials_and_its_best_settings_train(tmp_path, capsys, one_thread):
    path = study_file(tmp_path / "files", trials=2, folds=2, final_seeds=[0])
    study = tmp_path / "study"
    tune.main([path, "--study", str(study)])
    out = capsys.readouterr().out
    trials = trials_of(f"sqlite:///{study / 'study.db'}", "study")
    assert [trial.state.name for trial in trials] == ["COMPLETE", "COMPLETE"]
    # each trial: one training a fold, on the other fold's classes; its value the mean of the folds'
    for trial in trials:
        folds = [read_csv(study / "trials" / f"trial_{trial.number:04d}_fold{fold}" / "metrics.csv")
                 for fold in range(2)]
        best = [max(float(row["mAP@R"]) for row in rows if row["split"] == "val" and row["epoch"] != "0")
                for rows in folds]
        assert trial.value == pytest.approx(sum(best) / 2)
    assert [line.split(" (")[0] for line in out.splitlines() if line.startswith("trial ")] == ["trial 0", "trial 1"]
    # the best settings run as they are; the final runs are tested separated and concatenated
    assert program.run_main(["--config", study / "best.yaml", "--save_path", tmp_path / "runs", "--savename", "best",
                             "--no_reports"]) == 0
    best = yaml.safe_load((study / "best.yaml").read_text())
    assert best["loss_multisimilarity_thresh"] == \
        pytest.approx(max(trials, key=lambda trial: trial.value).params["loss_multisimilarity_thresh"])
    with open(study / "summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert [row["evaluation"] for row in summary] == ["separated (16-d)", "concatenated (32-d)"]
    assert float(summary[0]["mAP@R_low"]) <= float(summary[0]["mAP@R"]) <= float(summary[0]["mAP@R_high"])
    for picture in ("history.png", "importances.png", "parallel_coordinates.png"):
        assert (study / picture).stat().st_size > 0, picture
    assert len(read_csv(study / "final.csv")) == 3  # two fold models and their concatenation


class AlwaysPrune:
    def prune(self, study, trial):
        return True


def test_a_poor_trial_is_pruned_after_its_first_epoch_and_leaves_a_resumable_folder(tmp_path, one_thread):
    path = study_file(tmp_path / "files", run={**RUN, "n_epochs": 2, "use_tv_split": True})
    plan = tune.make_plan(tune.build_parser().parse_args([path, "--study", str(tmp_path / "study")]), [])
    optuna = tune.optuna_quietly()
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    study.optimize(tune.objective_of(plan), n_trials=1)
    assert study.trials[0].state.name == "PRUNED" and list(study.trials[0].intermediate_values) == [1]
    run = tmp_path / "study" / "trials" / "trial_0000"
    assert [row["epoch"] for row in read_csv(run / "metrics.csv")] == ["0", "0", "1", "1"]  # val and test
    assert not (run / "summary.json").exists()
    assert "epoch 1/2" in (tmp_path / "study" / "trials" / "trial_0000.log").read_text()


@pytest.mark.parametrize("change,fragment", [
    ({"space": {"learning_rate": {"low": 1e-5, "high": 1e-3}}}, "unknown or untunable flag learning_rate"),
    ({"space": {"diffusion_w": {"low": 0.5, "high": 1.0}}}, "diffusion_w: 1.0 is not a value the flag takes"),
    ({"space": {"optim": {"choices": ["adam", "lamb"]}}}, "optim: 'lamb' is not a value the flag takes"),
    ({"space": {"bs": {"low": 1.5, "high": 100}}}, "must be integers with low < high"),
    ({"folds": 6}, "--folds 6: the training split has 5 classes"),
    ({"folds": 0}, "would be measured on the test split"),
    ({"objective": "mAP@X", "folds": 2}, "--objective mAP@X"),
    ({"storage": "postgresql://nobody@127.0.0.1:9/none", "folds": 2}, "cannot open the study storage"),
])
def test_bad_input_is_one_line_and_creates_nothing(tmp_path, capsys, change, fragment):
    path = study_file(tmp_path / "files", **{"folds": 2, **{key: value for key, value in change.items()
                                                             if key != "space"}},
                      space=change.get("space"))
    with pytest.raises(SystemExit) as exit_info:
        tune.main([path, "--study", str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "study").exists()


def test_a_study_name_reused_for_another_search_is_refused(tmp_path, capsys):
    first = study_file(tmp_path / "first", folds=2)
    plan = tune.make_plan(tune.build_parser().parse_args([first, "--study", str(tmp_path / "study")]), [])
    os.makedirs(plan.folder)
    tune.open_study(plan)
    other = study_file(tmp_path / "other", folds=2, space={**SPACE, "kd_tau": {"low": 0.5, "high": 2.0}})
    with pytest.raises(SystemExit) as exit_info:
        tune.main([other, "--study", str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "was made with another space" in err and err.count("\n") == 1


def test_a_study_name_reused_with_another_number_of_folds_says_so(tmp_path, capsys):
    first = study_file(tmp_path / "first", folds=2)
    plan = tune.make_plan(tune.build_parser().parse_args([first, "--study", str(tmp_path / "study")]), [])
    os.makedirs(plan.folder)
    tune.open_study(plan)
    with pytest.raises(SystemExit):
        tune.main([study_file(tmp_path / "other", folds=3), "--study", str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert "was made with another number of folds; give another --study_name" in err, err


def test_an_empty_space_is_named_with_an_example_in_plain_yaml():
    with pytest.raises(UserError) as error:
        tune.check_space({}, None, "study.yaml")
    assert str(error.value) == ("study.yaml: space: maps main.py flags to distributions, e.g. lr: {low: 1.0e-6, "
                                "high: 1.0e-4, log: true}; it is missing or empty")


def worker(path, url, folder, *extra):
    return subprocess.Popen([sys.executable, "-m", "studies.tune", path, "--study", str(folder), "--storage", url,
                             "--study_name", "shared", "--no_final", *extra], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=program.environment())


@pytest.mark.slow
def test_two_workers_on_postgresql_share_one_study(tmp_path, postgres_url):  # noqa: F811
    path = study_file(tmp_path / "files", run={**RUN, "use_tv_split": True, "tv_split_by_samples": True}, trials=4)
    workers = [worker(path, postgres_url, tmp_path / f"machine_{index}") for index in range(2)]
    outputs = [process.communicate(timeout=program.PATIENCE)[0] for process in workers]
    assert [process.returncode for process in workers] == [0, 0], outputs
    trials = trials_of(postgres_url, "shared")
    finished = [trial for trial in trials if trial.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4 and len({trial.number for trial in trials}) == len(trials)
    # every trial ran once, each worker ran some: other states are only the extra asks past the budget
    assert all(trial.user_attrs.get("over_budget") for trial in trials if trial not in finished)
    assert len({tuple(sorted(trial.params.items())) for trial in finished}) == 4
    ran = [sorted(os.listdir(tmp_path / f"machine_{index}" / "trials")) for index in range(2)]
    assert all(any(name.endswith(".log") for name in names) for names in ran)


@pytest.mark.slow
def test_a_killed_workers_trial_is_failed_and_run_again(tmp_path, postgres_url):  # noqa: F811
    path = study_file(tmp_path / "files", run={**RUN, "use_tv_split": True, "tv_split_by_samples": True, "n_epochs": 3},
                      trials=2)
    name = "killed"
    victim = subprocess.Popen([sys.executable, "-m", "studies.tune", path, "--study", str(tmp_path / "a"), "--storage",
                               postgres_url, "--study_name", name, "--no_final", "--heartbeat", "1"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=program.environment())
    started = tmp_path / "a" / "trials" / "trial_0000" / "metrics.csv"
    deadline = time.monotonic() + program.PATIENCE
    while not started.exists():  # the first trial has evaluated its epoch 0: it is training
        assert victim.poll() is None and time.monotonic() < deadline
        time.sleep(0.5)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert [trial.state.name for trial in trials_of(postgres_url, name)] == ["RUNNING"]
    # The command again (here, or on another machine) fails the dead trial and runs it again.
    again = subprocess.run([sys.executable, "-m", "studies.tune", path, "--study", str(tmp_path / "b"), "--storage",
                            postgres_url, "--study_name", name, "--no_final", "--heartbeat", "1"], cwd=REPO,
                           capture_output=True, text=True, timeout=program.PATIENCE, env=program.environment())
    assert again.returncode == 0, again.stdout + again.stderr
    trials = trials_of(postgres_url, name)
    assert trials[0].state.name == "FAIL"
    retried = [trial for trial in trials if trial.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE" and retried[0].params == trials[0].params
    assert len([trial for trial in trials if trial.state.name == "COMPLETE"]) == 2


STUDY_FILES = sorted(name for name in os.listdir(os.path.join(REPO, "Sample_Runs", "studies"))
                     if name.endswith(".yaml") and "_MS_" in name or name.startswith("digits_") and "_run" not in name)


@pytest.mark.parametrize("name", STUDY_FILES)
def test_every_sample_study_plans_under_dry_run(name, capsys, tmp_path):
    path = os.path.join(REPO, "Sample_Runs", "studies", name)
    tune.main([path, "--dry-run", "--study", str(tmp_path / "study")])
    out = capsys.readouterr().out
    budget = ("50 trials: 200 trainings", "then 20 final trainings") if "_MS_" in name else \
        ("12 trials: 24 trainings", "then 10 final trainings")
    assert all(part in out for part in budget)
    assert "--loss_multisimilarity_pos_weight: float in [0.01, 100] (log)" in out
    assert ("--kd_lambda" in out) == ("baseline" not in name) and ("--diffusion_w" in out) == ("OBDSD" in name)
    assert not (tmp_path / "study").exists()
