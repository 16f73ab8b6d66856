#!/usr/bin/env bash
# Split-Omniglot with the paper network on one GPU: meta-train `oml2020` (20,000 steps), then the
# full evaluation protocol (10:50:100:200:600 classes, 50 runs, 5 search runs per class count) on
# its checkpoint, printing the wall time of each part and where the results are.
#
#   bash scripts/reproduce_omniglot_gpu.sh                     # the whole thing (--device auto)
#   STEPS=3 QUICK=1 DEVICE=cpu bash scripts/reproduce_omniglot_gpu.sh   # a smoke test, minutes on a CPU
#
# Environment (all optional):
#   OMNIGLOT   folder with the Omniglot zips or folders (default ../shared/omniglot)
#   RESULTS    root of the run folders (default ../results); logs go to $RESULTS/logs/
#   DEVICE     auto | cpu | cuda[:N] (default auto: the GPU when torch sees one)
#   STEPS      meta-training steps (default 20000, the preset's; 3 with QUICK=1)
#   RUN_BATCH  evaluation runs trained together (default 50 on a GPU: all 50 runs in one batch; 1 on
#              a CPU, where the native engine runs and batching does not pay, docs/engines.md)
#   TF32       1: pass --tf32 to both scripts (TF32 and cuDNN autotuning on CUDA; utils/device.py);
#              default 0: float32 with deterministic cuDNN
#   NAME       run name (default oml2020_gpu, or oml2020_quick): folders <RESULTS>/<date>/omniglot/<NAME>_<n>
#   QUICK      1: a smoke test of the pipeline, NOT the paper's numbers: the oml2020 recipe on a small
#              network (28 px images, four 16-channel convolutions; the paper network's features alone
#              take ~22 min on a 2-core CPU) and a 2-run evaluation at 10 classes with one search run
#   PYTHON     interpreter (default python)
#   TRAIN_FLAGS, EVAL_FLAGS   extra flags for oml_omniglot.py / evaluate_omniglot.py (last: they win)
# The image and feature caches are the scripts' default: $OML_CACHE_DIR, or .oml_cache in the repository.
set -euo pipefail

absolute() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
# Paths the user gives are read from where the script was started; the defaults from the repository.
OMNIGLOT=$(absolute "${OMNIGLOT:-$REPO/../shared/omniglot}")
RESULTS=$(absolute "${RESULTS:-$REPO/../results}")
DEVICE=${DEVICE:-auto}
QUICK=${QUICK:-0}
PYTHON=${PYTHON:-python}
read -r -a train_extra <<< "${TRAIN_FLAGS:-}"
read -r -a eval_extra <<< "${EVAL_FLAGS:-}"  # (the +-expansions below: empty arrays under set -u, bash < 4.4)
cd "$REPO"
export PYTHONUNBUFFERED=1  # the logs below fill as the scripts print, not when they exit

# Where --device auto lands decides the evaluation's batching (the portable engine on CUDA).
resolved=$("$PYTHON" -c "
import sys
from utils.device import resolve_device
from utils.errors import UserError
try:
    print(resolve_device(sys.argv[1]).type)
except UserError as err:
    sys.exit(f'error: {err}')" "$DEVICE")
if [ -z "${RUN_BATCH:-}" ]; then
  if [ "$resolved" = cpu ]; then RUN_BATCH=1; else RUN_BATCH=50; fi
fi

train=(--preset oml2020 --path "$OMNIGLOT" --results-dir "$RESULTS" --device "$DEVICE" --no-progress)
evaluate=(--path "$OMNIGLOT" --results-dir "$RESULTS" --device "$DEVICE" --run-batch "$RUN_BATCH" --no-progress)
if [ "${TF32:-0}" = 1 ]; then
  train+=(--tf32)
  evaluate+=(--tf32)
fi
if [ "$QUICK" = 1 ]; then
  STEPS=${STEPS:-3}
  NAME=${NAME:-oml2020_quick}
  train+=(--image-size 28 --channels 16 --strides 2 1 2 1 --log-every 1)
  evaluate+=(--schedule 10 --runs 2 --search-runs 1)
else
  STEPS=${STEPS:-20000}
  NAME=${NAME:-oml2020_gpu}
fi
train+=(--steps "$STEPS" --name "$NAME")
evaluate+=(--name "${NAME}_eval")

mkdir -p "$RESULTS/logs"
stamp="$(date +%Y%m%d-%H%M%S)_$$"
train_log="$RESULTS/logs/${NAME}_${stamp}_train.log"
eval_log="$RESULTS/logs/${NAME}_${stamp}_eval.log"
echo "device: $DEVICE ($resolved); steps: $STEPS; evaluation --run-batch $RUN_BATCH; tf32: ${TF32:-0}; quick: $QUICK"
echo "logs: $train_log, $eval_log"

start=$(date +%s)
"$PYTHON" oml_omniglot.py "${train[@]}" ${train_extra[@]+"${train_extra[@]}"} 2>&1 | tee "$train_log"
train_seconds=$(( $(date +%s) - start ))
# The training script prints "run folder: <dir>" once the folder exists; the last such line is this run's.
run_dir=$(sed -n 's/^run folder: //p' "$train_log" | tail -n 1)
if [ -z "$run_dir" ] || [ ! -d "$run_dir" ]; then
  echo "error: no run folder in $train_log" >&2
  exit 1
fi

start=$(date +%s)
"$PYTHON" evaluate_omniglot.py --model "$run_dir" "${evaluate[@]}" ${eval_extra[@]+"${eval_extra[@]}"} 2>&1 | tee "$eval_log"
eval_seconds=$(( $(date +%s) - start ))
results=$(sed -n 's/^results: //p' "$eval_log" | tail -n 1)
if [ -z "$results" ] || [ ! -f "$results" ]; then
  echo "error: no results.json reported in $eval_log" >&2
  exit 1
fi

echo
echo "meta-training: ${train_seconds} s ($STEPS steps) -> $run_dir"
echo "evaluation:    ${eval_seconds} s -> $results"
echo "total:         $(( train_seconds + eval_seconds )) s on $DEVICE ($resolved)"
echo "overlay with other runs: python plot_results.py $(dirname "$results") OTHER_RUN ... --out fig4.png"
