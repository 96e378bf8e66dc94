#!/usr/bin/env bash
# Does OBD-SD help, under a fair comparison? Baseline, + PSD and + OBD-SD on scikit-learn's digits, each
# tuned with the same budget (12 trials of 2 class-disjoint folds of the training digits 0-4, TPE,
# median pruning, objective: validation MAP@R), then the best settings of each trained on both folds for
# 5 seeds and tested on digits 5-9; then each method against the baseline, with 95% bootstrap
# confidence intervals and paired t-tests.
#   bash Sample_Runs/digits_study.sh [SAVE_PATH]      (default Training_Results/digits_study)
# The study files are Sample_Runs/studies/digits_{baseline,PSD,OBDSD}.yaml. Reruns continue the studies and
# replace the comparisons with those of the studies as they then stand.
set -euo pipefail
cd "$(dirname "$0")/.."
save_path=${1:-Training_Results/digits_study}
python=${python:-.venv/bin/python}

for method in baseline PSD OBDSD; do
    "$python" -m studies.tune "Sample_Runs/studies/digits_$method.yaml" --study "$save_path/$method"
done
for method in PSD OBDSD; do
    echo
    "$python" -m studies.compare "$save_path/baseline/final" "$save_path/$method/final" --metrics mAP@R e_recall@1 \
        --out "$save_path/baseline_vs_$method" --overwrite
done
