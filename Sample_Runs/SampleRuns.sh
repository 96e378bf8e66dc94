#!/usr/bin/env bash
# The paper's runs (the settings of its released SampleRuns.sh) and their ablations on CUB200-2011, CARS196 and Stanford Online
# Products: ResNet50, bs 112, 2 samples per class, one training per seed.
#   datapath=/data gpu=0 seeds="0 1 2" bash Sample_Runs/SampleRuns.sh [--dry-run] [vit] [cub|cars|sop|inshop ...]
# (in any order; an unknown word stops the script before anything runs)
# $datapath holds cub200/, cars196/, online_products/ and inshop/ (or CUB_200_2011/, Stanford_Online_Products/).
# --dry-run prints every command instead of running it. $extra adds flags to every run, split at
# spaces (e.g. extra="--log_online --group paper").
#
# Each run is one file of Sample_Runs/configs/, the one place its flags are written: <DATA>_<run>.yaml
# runs as `python main.py --config Sample_Runs/configs/<DATA>_<run>.yaml` with --source, --gpu,
# --seed and --savename <DATA>_<run>_s<seed> added. Per dataset (CUB, CARS, SOP):
#   <DATA>_MS_baseline, <DATA>_MS_OBDSD_d128, <DATA>_MS_OBDSD_d512   the rows of the paper's table;
#   <DATA>_MS_PSD_d128       PSD alone: the 128-d OBD-SD row's kd_lambda, no diffusion;
#   <DATA>_Margin_baseline, <DATA>_Margin_PSD_d128, <DATA>_Margin_OBDSD_d128
#                            margin loss (distance-weighted mining) counterparts of the 128-d MS rows,
#                            with the MS rows' distillation settings.
# The paper's scripts give no settings for the PSD and margin rows: these are the ablations' choice.
# In-Shop (not in the paper; our settings, those of the SOP rows): INSHOP_MS_baseline,
# INSHOP_MS_OBDSD_d128 and INSHOP_MS_OBDSD_d512. On SOP and In-Shop, <DATA>_MS_XBM_d128 adds a cross-batch
# memory to the baseline and <DATA>_MS_XBM_OBDSD_d128 OBD-SD over the memory's graph (docs/reproducing.md).
# Without a dataset word, all four datasets run.
# `vit` runs the ViT track instead: VIT_<DATA>_MS_baseline, VIT_<DATA>_MS_PSD, VIT_<DATA>_MS_OBDSD, a
# ViT-S/16 DINO (timm) at 384-d with AdamW and a cosine schedule (each file says which settings
# come from Hyp-ViT and which are ours).
set -euo pipefail
# Every word is read before anything runs: options in any position, an unknown word stops the script.
dry_run=false
track=""
datasets=()
for word in "$@"; do
    case $word in
        --help|-h) sed -n '2,/^set /s/^# \{0,1\}//p' "$0"; exit 0 ;;
        --dry-run) dry_run=true ;;
        vit) track=VIT_ ;;
        cub|cars|sop|inshop) datasets+=("$word") ;;
        *) echo "error: unknown word '$word': give cub, cars, sop or inshop, and optionally vit, --dry-run or --help" >&2
           exit 2 ;;
    esac
done
[ ${#datasets[@]} -gt 0 ] || datasets=(cub cars sop inshop)
cd "$(dirname "$0")/.."
datapath=${datapath:-../Datasets}
gpu=${gpu:-0}
seeds=${seeds:-0}
python=${python:-.venv/bin/python}
read -r -a extra <<< "${extra:-}"

for dataset in "${datasets[@]}"; do
    case $dataset in cub) prefix=CUB ;; cars) prefix=CARS ;; sop) prefix=SOP ;; inshop) prefix=INSHOP ;; esac
    for config in Sample_Runs/configs/"${track}${prefix}"_*.yaml; do
        name=$(basename "$config" .yaml)
        for seed in $seeds; do
            command=("$python" main.py --config "$config" --source "$datapath" --gpu "$gpu" --seed "$seed"
                     --savename "${name}_s${seed}" ${extra[@]+"${extra[@]}"})
            if $dry_run; then
                printf '%q ' "${command[@]}"
                printf '\n'
            else
                "${command[@]}"
            fi
        done
    done
done
