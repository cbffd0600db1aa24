#!/usr/bin/env bash
# Train the unfinished folds of a cross-validation, then its out-of-fold table, resumably.
#
#   scripts/run_folds.sh RUNS DATA FOLDS [train flags...]
#
# RUNS/fold<k> is fold k's run folder: a folder with config.json is resumed (train --resume, which does
# nothing for a finished fold), any other is started with the train flags given, plus --folds FOLDS
# --fold k. When every fold has finished, RUNS/cv is the out-of-fold table (crossval --runs, with the
# post-processing chosen on it). A kill loses at most the epoch in progress, so the script can be run
# again at any time (nohup nice ... &) to carry on; it works one fold at a time, so folds finish in order.
# The text {fold} in a flag becomes the fold's number, e.g. --init-from pretrained/fold-{fold}.keras for a
# second cycle from each fold model of an ensemble.
# Each fold logs to RUNS/fold<k>.log (one line per epoch).
#
# BRATS_KERAS (default: brats-keras) is the command to run, e.g. "python -m brats_keras.cli" with
# PYTHONPATH set to a frozen copy of the package, so that edits to the checkout do not change a run.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 RUNS DATA FOLDS [train flags...]" >&2
    exit 2
fi
runs=$1 data=$2 folds=$3
shift 3
cmd=${BRATS_KERAS:-brats-keras}
mkdir -p "$runs"
fold_dirs=()
for ((k = 0; k < folds; k++)); do
    dir="$runs/fold$k"
    fold_dirs+=("$dir")
    if [ -f "$dir/config.json" ]; then
        echo "$(date -u +%FT%TZ) fold $k: resuming $dir"
        $cmd train --resume "$dir" >>"$runs/fold$k.log" 2>&1
    else
        echo "$(date -u +%FT%TZ) fold $k: starting $dir"
        flags=("${@//\{fold\}/$k}")
        $cmd train --data "$data" --out "$dir" --folds "$folds" --fold "$k" "${flags[@]}" >>"$runs/fold$k.log" 2>&1
    fi
    echo "$(date -u +%FT%TZ) fold $k: done"
done
$cmd crossval --runs "${fold_dirs[@]}" --out "$runs/cv" --choose-postprocessing --confidence 0 --quiet \
    >>"$runs/cv.log" 2>&1
echo "$(date -u +%FT%TZ) out-of-fold table: $runs/cv/crossval.json"
