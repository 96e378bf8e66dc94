"""Sample_Runs/SampleRuns.sh: every run parses with parameters.parse, matches the paper's run table, runs
what --dry-run prints, and has a Sample_Runs/configs/<run>.yaml that parses to the same flags."""
import os
import shlex
import subprocess

import pytest

import parameters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "Sample_Runs", "configs")

# The paper's runs (its released SampleRuns.sh):
# (arch suffixes, embed_dim, n_epochs, kd_lambda, diffusion_w, diffusion_tau, tau, gamma);
# None for the distillation settings of a baseline.
D128, D512 = "resnet50_frozen_normalize", "resnet50_frozen_normalize_double"
PAPER = {
    "CUB_MS_baseline": ("cub200", D128, 128, 150, None, None, None, [], 0.3),
    "CUB_MS_OBDSD_d128": ("cub200", D128, 128, 150, 1000, 0.3, 1.0, [], 0.3),
    "CUB_MS_OBDSD_d512": ("cub200", D512, 512, 150, 1000, 0.3, 1.0, [], 0.3),
    "CARS_MS_baseline": ("cars196", D128, 128, 150, None, None, None, [], 0.3),
    "CARS_MS_OBDSD_d128": ("cars196", D128, 128, 150, 75, 0.99, 1.0, [], 0.3),
    "CARS_MS_OBDSD_d512": ("cars196", D512, 512, 300, 200, 0.99, 1.0, [200, 250], 0.3),
    "SOP_MS_baseline": ("online_products", D128, 128, 100, None, None, None, [], 0.3),
    "SOP_MS_OBDSD_d128": ("online_products", D128, 128, 100, 100, 0.5, 0.005, [], 0.3),
    "SOP_MS_OBDSD_d512": ("online_products", D512, 512, 200, 200, 0.5, 0.005, [70, 100], 0.2),
}
ABLATIONS = ["MS_PSD_d128", "Margin_baseline", "Margin_PSD_d128", "Margin_OBDSD_d128"]
PER_RUN_FLAGS = ("source", "gpu", "seed", "savename")


def dry_run(*arguments, **env):
    result = subprocess.run(["bash", "Sample_Runs/SampleRuns.sh", "--dry-run", *arguments], cwd=REPO, check=True,
                            capture_output=True, text=True, env={**os.environ, **env})
    return [shlex.split(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def runs():
    """{savename: namespace} of every printed command; the interpreter named by $python never runs."""
    commands = dry_run(python="/nonexistent/python", seeds="0 1", datapath="/data sets", gpu="1")
    assert all(command[:2] == ["/nonexistent/python", "main.py"] for command in commands)
    parsed = [parameters.parse(command[2:]) for command in commands]
    assert len(parsed) == (len(PAPER) + 3 * len(ABLATIONS)) * 2
    return {opt.savename: opt for opt in parsed}


def test_every_row_of_the_paper_table(runs):
    for name, (dataset, arch, embed_dim, n_epochs, kd_lambda, diffusion_w, diffusion_tau, tau, gamma) in \
            PAPER.items():
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


def test_each_run_has_a_config_file_with_the_same_flags(runs):
    names = {savename.rsplit("_s", 1)[0] for savename in runs}
    assert sorted(f"{name}.yaml" for name in names) == sorted(os.listdir(CONFIGS))
    for savename, opt in runs.items():
        config = os.path.join(CONFIGS, f"{savename.rsplit('_s', 1)[0]}.yaml")
        per_run = ["--source", opt.source, "--gpu", *map(str, opt.gpu), "--seed", str(opt.seed),
                   "--savename", opt.savename]
        assert vars(parameters.parse(["--config", config, *per_run])) == vars(opt), savename


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
    assert executed == printed and len(executed) == 2 * (3 + len(ABLATIONS))
    assert all(command[-3:] == ["--log_online", "--group", "paper"] for command in executed)


@pytest.mark.parametrize("words", [["--dry-run", "imagenet"], ["cub", "--dryrun"], ["cub", "cars", "-n"]])
def test_an_unknown_word_stops_the_script_before_anything_runs(tmp_path, words):
    log = tmp_path / "commands.log"
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!/bin/sh\necho ran >> {log}\n")
    fake_python.chmod(0o755)
    result = subprocess.run(["bash", "Sample_Runs/SampleRuns.sh", *words], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "python": str(fake_python)})
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "give cub, cars or sop" in result.stderr
    assert not log.exists()


def test_options_are_accepted_in_any_position():
    assert dry_run("cub", "--dry-run") == dry_run("--dry-run", "cub")
