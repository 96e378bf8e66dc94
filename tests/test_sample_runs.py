"""Sample_Runs/SampleRuns.sh runs the files of Sample_Runs/configs/, the one place the runs' flags are written:
every run parses with parameters.parse, the README's table of the paper's runs matches them, and the script
runs what --dry-run prints."""
import os
import re
import shlex
import subprocess
import types

import pytest
import yaml

import datasets
import parameters
import training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "Sample_Runs", "configs")

ABLATIONS = ["MS_PSD_d128", "Margin_baseline", "Margin_PSD_d128", "Margin_OBDSD_d128"]
PAPER_ROWS = 9  # the paper's table: baseline and OBD-SD at 128-d and 512-d, on three datasets
INSHOP = ["INSHOP_MS_baseline", "INSHOP_MS_OBDSD_d128", "INSHOP_MS_OBDSD_d512"]  # ours: the SOP rows' settings
# A cross-batch memory on the two datasets of many small classes, with and without OBDP over its graph.
XBM = {"SOP_MS_XBM_d128": "SOP_MS_baseline", "SOP_MS_XBM_OBDSD_d128": "SOP_MS_OBDSD_d128",
       "INSHOP_MS_XBM_d128": "INSHOP_MS_baseline", "INSHOP_MS_XBM_OBDSD_d128": "INSHOP_MS_OBDSD_d128"}


def readme_paper_table():
    """{run: (arch, embed_dim, n_epochs, kd_lambda, diffusion_w, diffusion_tau, tau, gamma)} of the
    README's table of the paper's runs; None for the distillation settings of a baseline."""
    with open(os.path.join(REPO, "README.md")) as handle:
        lines = [line for line in handle if re.match(r"^\| `(CUB|CARS|SOP|INSHOP)_MS_(baseline|OBDSD_d\d+)` \|", line)]
    table = {}
    for line in lines:
        run, arch, embed, epochs, kd_lambda, w, tau, steps = [cell.strip(" `") for cell in line.strip().strip("|")
                                                              .split("|")]
        milestones, gamma = steps.split(", ") if steps != "-" else ("", "0.3")
        table[run] = (arch, int(embed), int(epochs), number(kd_lambda), number(w), number(tau),
                      [int(epoch) for epoch in milestones.split()], float(gamma))
    return table


def number(text, kind=float):
    return None if text == "-" else kind(text)


def dry_run(*arguments, **env):
    result = subprocess.run(["bash", "Sample_Runs/SampleRuns.sh", "--dry-run", *arguments], cwd=REPO, check=True,
                            capture_output=True, text=True, env={**os.environ, **env})
    return [shlex.split(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def runs():
    """{savename: the run's record as a namespace (settings by flag name)} of every printed command; the
    interpreter named by $python never runs."""
    commands = dry_run(python="/nonexistent/python", seeds="0 1", datapath="/data sets", gpu="1")
    assert all(command[:2] == ["/nonexistent/python", "main.py"] for command in commands)
    parsed = [parameters.parse([os.path.join(REPO, word) if word.startswith("Sample_Runs/") else word
                                for word in command[2:]]) for command in commands]
    assert len(parsed) == (PAPER_ROWS + 3 * len(ABLATIONS) + len(INSHOP) + len(XBM)) * 2
    records = [types.SimpleNamespace(**training.to_record(settings)) for settings in parsed]
    return {record.savename: record for record in records}


def test_every_row_of_the_paper_table(runs):
    paper = readme_paper_table()  # and the In-Shop runs (ours), in a table of the same form
    assert len(paper) == PAPER_ROWS + len(INSHOP)
    for name, (arch, embed_dim, n_epochs, kd_lambda, diffusion_w, diffusion_tau, tau, gamma) in paper.items():
        dataset = {"CUB": "cub200", "CARS": "cars196", "SOP": "online_products", "INSHOP": "inshop"}[name.split("_")[0]]
        for seed in (0, 1):
            opt = runs[f"{name}_s{seed}"]
            assert (opt.dataset, opt.arch, opt.embed_dim, opt.n_epochs, opt.tau, opt.gamma) == \
                (dataset, arch, embed_dim, n_epochs, tau, gamma), name
            assert (opt.bs, opt.samples_per_class, opt.optim, opt.lr, opt.seed, opt.source, opt.gpu) == \
                (112, 2, "adam", 1e-5, seed, "/data sets", [1])
            assert opt.loss.startswith("multisimilarity")
            if kd_lambda is None:
                assert not opt.PSD and not opt.OBDP, name
            else:
                assert (opt.PSD, opt.OBDP, opt.kd_lambda, opt.diffusion_w, opt.diffusion_tau) == \
                    (True, True, kd_lambda, diffusion_w, diffusion_tau), name


def test_psd_and_margin_rows_mirror_the_128d_runs(runs):
    for data in ("CUB", "CARS", "SOP"):
        obd_sd = runs[f"{data}_MS_OBDSD_d128_s0"]
        psd = runs[f"{data}_MS_PSD_d128_s0"]
        assert (psd.PSD, psd.OBDP, psd.kd_lambda) == (True, False, obd_sd.kd_lambda)
        for kind, ms in (("baseline", runs[f"{data}_MS_baseline_s0"]), ("PSD_d128", psd), ("OBDSD_d128", obd_sd)):
            margin = runs[f"{data}_Margin_{kind}_s0"]
            assert margin.loss.startswith("margin") and margin.batch_mining == "distance"
            distillation = ("dataset", "arch", "embed_dim", "n_epochs", "PSD", "OBDP", "kd_lambda", "diffusion_w",
                            "diffusion_tau")
            assert [getattr(margin, key) for key in distillation] == [getattr(ms, key) for key in distillation]


def test_every_config_file_runs_once_a_seed_with_only_the_per_run_flags_added():
    commands = dry_run(seeds="0 1", datapath="/data", gpu="1") + dry_run("vit", seeds="0 1", datapath="/data", gpu="1")
    configs = sorted(name for name in os.listdir(CONFIGS) if name.endswith(".yaml"))
    assert sorted(command[3] for command in commands) == sorted(f"Sample_Runs/configs/{name}" for name in configs * 2)
    for command in commands:
        name = os.path.basename(command[3]).removesuffix(".yaml")
        assert command[2] == "--config" and command[4:] in (
            ["--source", "/data", "--gpu", "1", "--seed", seed, "--savename", f"{name}_s{seed}"] for seed in "01")


def test_the_xbm_runs_are_their_counterparts_with_a_memory_that_fits_the_training_split(runs):
    for name, counterpart in XBM.items():
        run, base = vars(runs[f"{name}_s0"]), vars(runs[f"{counterpart}_s0"])
        changed = {key for key in run if run[key] != base.get(key)} - {"savename"}
        graph = {key for key in changed if key.startswith("diffusion_")}  # the sparse graph and its solver
        assert changed - graph == {"xbm_size", "xbm_start"} and bool(graph) == base["OBDP"], name
        assert run["xbm_start"] == 1000
        assert run["xbm_size"] <= datasets.facts(run["dataset"]).published["train"][0]
        if base["OBDP"]:  # the memory's graph must be sparse and solved without a dense |V| x |V| matrix
            assert run["diffusion_k"] == 10 and run["diffusion_solver"] == "iterative"
    assert vars(runs["SOP_MS_XBM_d128_s0"])["xbm_size"] == 55000  # the XBM authors' released config


def test_the_script_runs_what_dry_run_prints(tmp_path):
    recorder = tmp_path / "record.sh"
    log = tmp_path / "commands"
    recorder.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" >> {log}\nprintf "\\n" >> {log}\n')
    recorder.chmod(0o755)
    env = {"python": str(recorder), "seeds": "3", "extra": "--log_online --group paper"}
    subprocess.run(["bash", "Sample_Runs/SampleRuns.sh", "cars", "sop"], cwd=REPO, check=True,
                   env={**os.environ, **env})
    executed = [line.rstrip("\0").split("\0") for line in log.read_text().splitlines()]
    printed = [command[1:] for command in dry_run("cars", "sop", **env)]
    assert executed == printed and len(executed) == 2 * (3 + len(ABLATIONS)) + 2  # and SOP's two XBM runs
    assert all(command[-3:] == ["--log_online", "--group", "paper"] for command in executed)


@pytest.mark.parametrize("words", [["--dry-run", "imagenet"], ["cub", "--dryrun"], ["cub", "cars", "-n"]])
def test_an_unknown_word_stops_the_script_before_anything_runs(tmp_path, words):
    log = tmp_path / "commands.log"
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!/bin/sh\necho ran >> {log}\n")
    fake_python.chmod(0o755)
    result = subprocess.run(["bash", "Sample_Runs/SampleRuns.sh", *words], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "python": str(fake_python)})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "give cub, cars, sop or inshop" in result.stderr
    assert not log.exists()


def test_options_are_accepted_in_any_position():
    assert dry_run("cub", "--dry-run") == dry_run("--dry-run", "cub")


VIT_DATASETS = {"CUB": "cub200", "CARS": "cars196", "SOP": "online_products", "INSHOP": "inshop"}


def readme_vit_table():
    """{data: (n_epochs, kd_lambda, diffusion_w, diffusion_tau)} of the README's table of the ViT runs."""
    with open(os.path.join(REPO, "README.md")) as handle:
        rows = [line.strip().strip("|").split("|") for line in handle if re.match(r"^\| `VIT_\w+` \|", line)]
    table = {}
    for name, epochs, kd_lambda, diffusion in rows:
        w, tau = diffusion.split(",")
        table[name.strip(" `").removeprefix("VIT_")] = (int(epochs), float(kd_lambda), float(w), float(tau))
    return table


def test_the_vit_runs_are_those_of_the_readme():
    runs = {}
    for command in dry_run("vit", seeds="0", datapath="/data"):
        settings = parameters.parse([os.path.join(REPO, word) if word.startswith("Sample_Runs/") else word
                                     for word in command[2:]])
        opt = types.SimpleNamespace(**training.to_record(settings))
        runs[opt.savename.removesuffix("_s0")] = opt
    assert sorted(runs) == sorted(f"VIT_{data}_MS_{kind}" for data in VIT_DATASETS
                                  for kind in ("baseline", "PSD", "OBDSD"))
    table = readme_vit_table()
    assert sorted(table) == sorted(VIT_DATASETS)
    for data, (n_epochs, kd_lambda, diffusion_w, diffusion_tau) in table.items():
        for kind in ("baseline", "PSD", "OBDSD"):
            opt = runs[f"VIT_{data}_MS_{kind}"]
            assert (opt.dataset, opt.arch, opt.embed_dim, opt.n_epochs, opt.bs, opt.samples_per_class) == \
                (VIT_DATASETS[data], "timm:vit_small_patch16_224.dino_normalize", 384, n_epochs, 112, 2)
            assert (opt.optim, opt.lr, opt.decay, opt.clip_grad, opt.scheduler, opt.warmup_epochs) == \
                ("adamw", 3e-5, 0.01, 3.0, "cosine", 1.0)
            assert (opt.PSD, opt.OBDP) == (kind != "baseline", kind == "OBDSD")
            if opt.PSD:
                assert opt.kd_lambda == kd_lambda
            if opt.OBDP:
                assert (opt.diffusion_w, opt.diffusion_tau) == (diffusion_w, diffusion_tau)


def test_each_recipe_is_written_once_and_each_run_states_only_what_differs():
    recipes = {name: yaml.safe_load(open(os.path.join(CONFIGS, "recipes", name)))
               for name in os.listdir(os.path.join(CONFIGS, "recipes"))}
    recipe_keys = {key for values in recipes.values() for key in values if key != "include"}
    assert {"bs", "arch", "optim", "lr", "clip_grad", "scheduler"} <= recipe_keys
    for name in sorted(os.listdir(CONFIGS)):
        if not name.endswith(".yaml"):
            continue
        values = yaml.safe_load(open(os.path.join(CONFIGS, name)))
        assert "include" in values, name
        assert not recipe_keys & set(values), f"{name} repeats a recipe's {sorted(recipe_keys & set(values))}"
        # and every run comes to a recipe through its includes (each relative to the file that names it)
        seen, pending = set(), [os.path.join(CONFIGS, name)]
        while pending:
            path = pending.pop()
            included = yaml.safe_load(open(path)).get("include", [])
            for item in included if isinstance(included, list) else [included]:
                target = os.path.normpath(os.path.join(os.path.dirname(path), item))
                if target not in seen:
                    seen.add(target)
                    pending.append(target)
        assert any(os.path.dirname(path).endswith("recipes") for path in seen), name


@pytest.mark.parametrize("script, runs_per_seed", [("digits_ablation.sh", 3), ("digits_memory_ablation.sh", 4)])
def test_the_digits_ablations_run_settings_that_parse(tmp_path, script, runs_per_seed):
    """Each training the script starts parses as a run (a memory within the digits' 901 training images),
    then the summariser reads the folder the runs were saved to."""
    recorder = tmp_path / "record.sh"
    log = tmp_path / "commands"
    recorder.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" >> {log}\nprintf "\\n" >> {log}\n')
    recorder.chmod(0o755)
    subprocess.run(["bash", f"Sample_Runs/{script}", str(tmp_path / "runs")], cwd=REPO, check=True,
                   env={**os.environ, "python": str(recorder)})
    commands = [line.rstrip("\0").split("\0") for line in log.read_text().splitlines()]
    trainings, summaries = commands[:3 * runs_per_seed], commands[3 * runs_per_seed:]
    assert all(command[0] == "main.py" for command in trainings)
    summarize = ["-m", "studies.summarize", str(tmp_path / "runs")]
    assert summaries and all(command[:3] == summarize for command in summaries)
    settings = [training.to_record(parameters.parse(command[1:])) for command in trainings]
    assert len({record["savename"] for record in settings}) == len(settings)
    assert all(record["xbm_size"] <= 901 for record in settings)


def test_every_paper_run_ranks_duplicate_images_as_the_released_code_does(runs):
    """The recipes say warn: a copy in a download is ranked as listed and counted aloud, never a stop
    (the released code keeps every listed image; the published figures include them)."""
    assert {record.duplicates for record in runs.values()} == {"warn"}
    assert parameters.parse(["--dataset", "digits"]).data.duplicates == "fail"
