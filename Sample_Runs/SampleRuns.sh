#!/usr/bin/env bash
# The paper's runs (SPEC section 4): ResNet50 + Multi-Similarity, bs 112, 2 samples per class,
# baseline vs OBD-SD (PSD + OBDP) on CUB200-2011, CARS196 and Stanford Online Products.
#   datapath=/data gpu=0 seeds="0 1 2" bash Sample_Runs/SampleRuns.sh [cub|cars|sop ...]
# $datapath holds cub200/, cars196/ and online_products/ (or CUB_200_2011/, Stanford_Online_Products/).
set -euo pipefail
cd "$(dirname "$0")/.."
datapath=${datapath:-../Datasets}
gpu=${gpu:-0}
seeds=${seeds:-0}
python=${python:-.venv/bin/python}
common=(--gpu "$gpu" --bs 112 --samples_per_class 2 --source "$datapath")
baseline=(--loss multisimilarity)
obd_sd=(--loss multisimilarity_obd_sd --PSD --OBDP)

run() {  # run NAME FLAGS...: one training per seed
    local name=$1; shift
    for seed in $seeds; do
        "$python" main.py "${common[@]}" --seed "$seed" --savename "${name}_s${seed}" "$@"
    done
}

cub() {
    run CUB_MS_baseline --dataset cub200 --n_epochs 150 --arch resnet50_frozen_normalize --embed_dim 128 "${baseline[@]}"
    run CUB_MS_OBDSD_d128 --dataset cub200 --n_epochs 150 --arch resnet50_frozen_normalize --embed_dim 128 \
        "${obd_sd[@]}" --kd_lambda 1000 --diffusion_w 0.3 --diffusion_tau 1.0
    run CUB_MS_OBDSD_d512 --dataset cub200 --n_epochs 150 --arch resnet50_frozen_normalize_double --embed_dim 512 \
        "${obd_sd[@]}" --kd_lambda 1000 --diffusion_w 0.3 --diffusion_tau 1.0
}

cars() {
    run CARS_MS_baseline --dataset cars196 --n_epochs 150 --arch resnet50_frozen_normalize --embed_dim 128 "${baseline[@]}"
    run CARS_MS_OBDSD_d128 --dataset cars196 --n_epochs 150 --arch resnet50_frozen_normalize --embed_dim 128 \
        "${obd_sd[@]}" --kd_lambda 75 --diffusion_w 0.99 --diffusion_tau 1.0
    run CARS_MS_OBDSD_d512 --dataset cars196 --n_epochs 300 --arch resnet50_frozen_normalize_double --embed_dim 512 \
        "${obd_sd[@]}" --kd_lambda 200 --diffusion_w 0.99 --diffusion_tau 1.0 --tau 200 250 --gamma 0.3
}

sop() {
    run SOP_MS_baseline --dataset online_products --n_epochs 100 --arch resnet50_frozen_normalize --embed_dim 128 "${baseline[@]}"
    run SOP_MS_OBDSD_d128 --dataset online_products --n_epochs 100 --arch resnet50_frozen_normalize --embed_dim 128 \
        "${obd_sd[@]}" --kd_lambda 100 --diffusion_w 0.5 --diffusion_tau 0.005
    run SOP_MS_OBDSD_d512 --dataset online_products --n_epochs 200 --arch resnet50_frozen_normalize_double \
        --embed_dim 512 "${obd_sd[@]}" --kd_lambda 200 --diffusion_w 0.5 --diffusion_tau 0.005 --tau 70 100 --gamma 0.2
}

[ $# -gt 0 ] || set -- cub cars sop
for dataset in "$@"; do
    case $dataset in
        cub|cars|sop) $dataset ;;
        *) echo "unknown dataset '$dataset': use cub, cars or sop" >&2; exit 2 ;;
    esac
done
