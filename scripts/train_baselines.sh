#!/usr/bin/env bash
# Train every baseline candidate behind the README's comparisons: pretraining and SR-NN for the
# sine networks (oml2020 and the 2019 network with the 2019 recipe) and the Omniglot `cpu` network,
# SR-NN at three sparsity targets beta, the Omniglot baselines at two Adam rates: the November 2026
# candidate set behind the one-seed `oml2020`, `mrcl2019` and Omniglot `cpu` baseline rows, which
# were chosen on search runs from the reported functions and classes. Choices are now made on the
# meta-validation split instead (evaluate_*.py --selection-functions / --selection-classes, then
# python -m experiment.evaluation.select; the sweeps behind the sine `quick` rows: docs/baselines.md).
#
#   bash scripts/train_baselines.sh                   # everything, one job at a time
#   JOBS=8 bash scripts/train_baselines.sh            # 8 jobs at once (a GPU machine)
#   EXTRA="--steps 3" bash scripts/train_baselines.sh # a smoke test
#   bash scripts/train_baselines.sh --list            # print the commands, run nothing
#
# Environment: RESULTS (root of the run folders, default ../results), OMNIGLOT (data folder,
# default ../shared/omniglot), JOBS, EXTRA (flags appended to every command), DEVICE (default auto).
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-../results}
OMNIGLOT=${OMNIGLOT:-../shared/omniglot}
JOBS=${JOBS:-1}
EXTRA=${EXTRA:-}
DEVICE=${DEVICE:-auto}
common="--results-dir $RESULTS --device $DEVICE --no-progress $EXTRA"

commands() {
  for beta in 0.05 0.1 0.2; do
    echo "python oml_regression.py --preset oml2020 --steps 20000 --method srnn --srnn-beta $beta --eval-runs 0 --name oml2020_srnn_b$beta $common"
    echo "python oml_regression.py --preset mrcl2019 --steps 20000 --method srnn --srnn-beta $beta --eval-runs 0 --name mrcl2019_srnn_b$beta $common"
    for lr in 1e-3 1e-4; do
      epochs=$([ "$lr" = 1e-3 ] && echo 25 || echo 45)
      echo "python oml_omniglot.py --preset cpu --method srnn --srnn-beta $beta --iid-lr $lr --iid-epochs $epochs --path $OMNIGLOT --name cpu_srnn_lr${lr}_b$beta $common"
    done
  done
  echo "python oml_regression.py --preset oml2020 --steps 20000 --method pretraining --eval-runs 0 --name oml2020_pretraining $common"
  echo "python oml_regression.py --preset mrcl2019 --steps 20000 --method pretraining --eval-runs 0 --name mrcl2019_pretraining $common"
  echo "python oml_omniglot.py --preset cpu --method pretraining --iid-lr 1e-3 --iid-epochs 25 --path $OMNIGLOT --name cpu_pretraining_lr1e-3 $common"
  echo "python oml_omniglot.py --preset cpu --method pretraining --iid-lr 1e-4 --iid-epochs 45 --path $OMNIGLOT --name cpu_pretraining_lr1e-4 $common"
}

if [ "${1:-}" = "--list" ]; then commands; exit 0; fi

# Decode the Omniglot cache once before the parallel jobs, so they do not all build it.
python -c "from datasets.omniglot import load_omniglot; load_omniglot('$OMNIGLOT', 'background', 28, progress=False)"
# Each job's output goes to $RESULTS/logs/<run name>.log.
mkdir -p "$RESULTS/logs"
export RESULTS
commands | xargs -P "$JOBS" -I{} sh -c 'name=$(echo "{}" | sed "s/.*--name \([^ ]*\).*/\1/"); start=$(date +%s);
  if {} > "$RESULTS/logs/$name.log" 2>&1; then echo "done $name in $(( $(date +%s) - start )) s";
  else echo "FAILED $name (see $RESULTS/logs/$name.log)"; exit 1; fi'
