"""Every paper run of Sample_Runs/SampleRuns.sh parses with parameters.parse and matches SPEC section 4."""
import os
import subprocess

import parameters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_sample_run_parses(tmp_path):
    recorder = tmp_path / "record.sh"
    log = tmp_path / "commands"
    recorder.write_text(f'#!/bin/sh\nshift\nprintf "%s\\0" "$@" >> {log}\nprintf "\\n" >> {log}\n')
    recorder.chmod(0o755)
    subprocess.run(["bash", "Sample_Runs/SampleRuns.sh"], cwd=REPO, check=True,
                   env={**os.environ, "python": str(recorder), "seeds": "0 1"})
    commands = [line.rstrip("\0").split("\0") for line in log.read_text().splitlines()]
    assert len(commands) == 9 * 2
    runs = {}
    for argv in commands:
        opt = parameters.parse(argv)
        runs[opt.savename] = opt
    cars_512 = runs["CARS_MS_OBDSD_d512_s1"]
    assert (cars_512.PSD, cars_512.OBDP, cars_512.kd_lambda, cars_512.n_epochs, cars_512.tau, cars_512.gamma,
            cars_512.arch, cars_512.embed_dim) == (True, True, 200, 300, [200, 250], 0.3,
                                                   "resnet50_frozen_normalize_double", 512)
    sop_128 = runs["SOP_MS_OBDSD_d128_s0"]
    assert (sop_128.diffusion_w, sop_128.diffusion_tau, sop_128.kd_lambda) == (0.5, 0.005, 100)
    assert not runs["CUB_MS_baseline_s0"].PSD and runs["CUB_MS_OBDSD_d128_s0"].diffusion_w == 0.3
