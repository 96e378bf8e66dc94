#!/usr/bin/env bash
# Baseline vs + PSD vs + OBD-SD (PSD + OBDP) on scikit-learn's bundled 8x8 digits, 3 seeds, on the CPU,
# then the summariser's tables of the 9 runs.
#   bash Sample_Runs/digits_ablation.sh [SAVE_PATH]      (default Training_Results/digits_ablation)
# Multi-Similarity, ResNet18 from random initialisation, 16-d embedding, 8 epochs; digits 0-4 train,
# 5-9 test. PSD and OBDP keep their default settings (kd_lambda 75, diffusion_w 0.99).
# The first table is the test split after the last epoch, no model selection. The second picks each
# run's best test epoch: digits have too few training classes for a useful validation split, so that
# selection peeks at the test split and is optimistic. Reruns replace the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
save_path=${1:-Training_Results/digits_ablation}
python=${python:-.venv/bin/python}
seeds=${seeds:-0 1 2}
common=(--dataset digits --arch resnet18_frozen_normalize --not_pretrained --embed_dim 16 --bs 50
        --samples_per_class 10 --lr 1e-4 --n_epochs 8 --kernels 0 --no_reports --loss multisimilarity
        --save_path "$save_path" --overwrite)

for seed in $seeds; do
    "$python" main.py "${common[@]}" --seed "$seed" --savename "baseline_s$seed"
    "$python" main.py "${common[@]}" --seed "$seed" --savename "PSD_s$seed" --PSD
    "$python" main.py "${common[@]}" --seed "$seed" --savename "OBDSD_s$seed" --PSD --OBDP
done
"$python" -m studies.summarize "$save_path" --final
echo
"$python" -m studies.summarize "$save_path"
