#!/usr/bin/env bash
# The paper's runs (the settings of its released SampleRuns.sh) and their ablations on CUB200-2011, CARS196 and Stanford Online
# Products: ResNet50, bs 112, 2 samples per class, one training per seed.
#   datapath=/data gpu=0 seeds="0 1 2" bash Sample_Runs/SampleRuns.sh [--dry-run] [cub|cars|sop ...]
# (in any order; an unknown word stops the script before anything runs)
# $datapath holds cub200/, cars196/ and online_products/ (or CUB_200_2011/, Stanford_Online_Products/).
# --dry-run prints every command instead of running it. $extra adds flags to every run, split at
# spaces (e.g. extra="--log_online --group paper").
#
# Runs per dataset (savename <run>_s<seed>):
#   <DATA>_MS_baseline, <DATA>_MS_OBDSD_d128, <DATA>_MS_OBDSD_d512   the rows of the paper's table;
#   <DATA>_MS_PSD_d128       PSD alone: the 128-d OBD-SD row's kd_lambda, no diffusion;
#   <DATA>_Margin_baseline, <DATA>_Margin_PSD_d128, <DATA>_Margin_OBDSD_d128
#                            margin loss (distance-weighted mining) counterparts of the 128-d MS rows,
#                            with the MS rows' distillation settings.
# The paper's scripts give no settings for the PSD and margin rows: these are the ablations' choice.
# Sample_Runs/configs/<run>.yaml holds the same flags for `python main.py --config FILE`.
set -euo pipefail
# Every word is read before anything runs: options in any position, an unknown word stops the script.
dry_run=false
datasets=()
for word in "$@"; do
    case $word in
        --help|-h) sed -n '2,/^set /s/^# \{0,1\}//p' "$0"; exit 0 ;;
        --dry-run) dry_run=true ;;
        cub|cars|sop) datasets+=("$word") ;;
        *) echo "error: unknown word '$word': give cub, cars or sop, and optionally --dry-run or --help" >&2; exit 2 ;;
    esac
done
[ ${#datasets[@]} -gt 0 ] || datasets=(cub cars sop)
cd "$(dirname "$0")/.."
datapath=${datapath:-../Datasets}
gpu=${gpu:-0}
seeds=${seeds:-0}
python=${python:-.venv/bin/python}
read -r -a extra <<< "${extra:-}"
common=(--gpu "$gpu" --bs 112 --samples_per_class 2 --source "$datapath")
ms=(--loss multisimilarity)
ms_sd=(--loss multisimilarity_obd_sd)
margin=(--loss margin --batch_mining distance)
margin_sd=(--loss margin_obd_sd --batch_mining distance)
d128=(--arch resnet50_frozen_normalize --embed_dim 128)
d512=(--arch resnet50_frozen_normalize_double --embed_dim 512)

run() {  # run NAME FLAGS...: one training per seed
    local name=$1; shift
    for seed in $seeds; do
        local command=("$python" main.py "${common[@]}" --seed "$seed" --savename "${name}_s${seed}" "$@"
                       ${extra[@]+"${extra[@]}"})
        if $dry_run; then
            printf '%q ' "${command[@]}"
            printf '\n'
        else
            "${command[@]}"
        fi
    done
}

runs() {  # runs DATA DATASET EPOCHS PSD-FLAGS OBD-SD-FLAGS: the 128-d MS and margin runs of a dataset
    local data=$1 dataset=(--dataset "$2" --n_epochs "$3")
    read -r -a psd <<< "$4"
    read -r -a obd_sd <<< "$5"
    run "${data}_MS_baseline" "${dataset[@]}" "${d128[@]}" "${ms[@]}"
    run "${data}_MS_PSD_d128" "${dataset[@]}" "${d128[@]}" "${ms_sd[@]}" "${psd[@]}"
    run "${data}_MS_OBDSD_d128" "${dataset[@]}" "${d128[@]}" "${ms_sd[@]}" "${obd_sd[@]}"
    run "${data}_Margin_baseline" "${dataset[@]}" "${d128[@]}" "${margin[@]}"
    run "${data}_Margin_PSD_d128" "${dataset[@]}" "${d128[@]}" "${margin_sd[@]}" "${psd[@]}"
    run "${data}_Margin_OBDSD_d128" "${dataset[@]}" "${d128[@]}" "${margin_sd[@]}" "${obd_sd[@]}"
}

cub() {
    runs CUB cub200 150 "--PSD --kd_lambda 1000" "--PSD --OBDP --kd_lambda 1000 --diffusion_w 0.3 --diffusion_tau 1.0"
    run CUB_MS_OBDSD_d512 --dataset cub200 --n_epochs 150 "${d512[@]}" "${ms_sd[@]}" \
        --PSD --OBDP --kd_lambda 1000 --diffusion_w 0.3 --diffusion_tau 1.0
}

cars() {
    runs CARS cars196 150 "--PSD --kd_lambda 75" "--PSD --OBDP --kd_lambda 75 --diffusion_w 0.99 --diffusion_tau 1.0"
    run CARS_MS_OBDSD_d512 --dataset cars196 --n_epochs 300 "${d512[@]}" "${ms_sd[@]}" \
        --PSD --OBDP --kd_lambda 200 --diffusion_w 0.99 --diffusion_tau 1.0 --tau 200 250 --gamma 0.3
}

sop() {
    runs SOP online_products 100 "--PSD --kd_lambda 100" \
        "--PSD --OBDP --kd_lambda 100 --diffusion_w 0.5 --diffusion_tau 0.005"
    run SOP_MS_OBDSD_d512 --dataset online_products --n_epochs 200 "${d512[@]}" "${ms_sd[@]}" \
        --PSD --OBDP --kd_lambda 200 --diffusion_w 0.5 --diffusion_tau 0.005 --tau 70 100 --gamma 0.2
}

for dataset in "${datasets[@]}"; do
    $dataset
done
