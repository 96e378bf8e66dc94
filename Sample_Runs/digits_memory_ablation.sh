#!/usr/bin/env bash
# A cross-batch memory at a small batch on scikit-learn's bundled 8x8 digits, 3 seeds, on the CPU: the
# baseline, + XBM, + OBD-SD, and + XBM with OBD-SD diffused over the memory's kNN graph; then the
# summariser's table of the 12 runs (test split after the last epoch, no model selection).
#   bash Sample_Runs/digits_memory_ablation.sh [SAVE_PATH]   (default Training_Results/digits_memory_ablation)
# Multi-Similarity, the `make demo` network (ResNet18 from random initialisation, 16-d), batches of 20
# (4 images of each of 5 draws), 8 epochs; digits 0-4 train (901 images, 45 steps an epoch), 5-9 test.
# The memory holds 400 images (20 batches) and starts after the first epoch (--xbm_start 45). OBD-SD
# keeps the default PSD and OBDP settings; over the memory its graph is each node's 10 nearest
# neighbours, solved iteratively. Reruns replace the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
save_path=${1:-Training_Results/digits_memory_ablation}
python=${python:-.venv/bin/python}
seeds=${seeds:-0 1 2}
common=(--dataset digits --arch resnet18_frozen_normalize --not_pretrained --embed_dim 16 --bs 20
        --samples_per_class 4 --lr 1e-4 --n_epochs 8 --kernels 0 --no_reports --loss multisimilarity
        --evaluation_metrics e_recall@1 e_recall@2 e_recall@4 nmi mAP@R --save_path "$save_path" --overwrite)
memory=(--xbm_size 400 --xbm_start 45)

for seed in $seeds; do
    "$python" main.py "${common[@]}" --seed "$seed" --savename "baseline_s$seed"
    "$python" main.py "${common[@]}" --seed "$seed" --savename "XBM_s$seed" "${memory[@]}"
    "$python" main.py "${common[@]}" --seed "$seed" --savename "OBDSD_s$seed" --PSD --OBDP
    "$python" main.py "${common[@]}" --seed "$seed" --savename "XBM_OBDSD_s$seed" "${memory[@]}" --PSD --OBDP \
        --diffusion_k 10 --diffusion_solver iterative
done
"$python" -m studies.summarize "$save_path" --final
