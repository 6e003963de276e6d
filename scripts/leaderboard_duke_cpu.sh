#!/usr/bin/env bash
# The Duke DME leaderboard on a CPU: every layer-and-fluid method of OCTSeg, two seeds, one equal
# wall-clock training budget each (conf/experiment/leaderboard_duke_cpu.yaml), run one after
# another, then the table with confidence intervals (scripts/leaderboard.py).
#
#   bash scripts/leaderboard_duke_cpu.sh                       # all methods, seeds 1 2, 4 minutes
#   BUDGET=00:00:01:30 SEEDS="1 2" METHODS="unet ynet" bash scripts/leaderboard_duke_cpu.sh
#
# Run it on an idle machine: the budget is wall time, so anything else running steals from it.
# Resumable: a run whose metrics.json exists is kept; an unfinished run folder is moved aside to
# <run>.unfinished-<time> (never deleted) and the run starts again.
# Not on the board, and why: islam (81 M parameters; one 496 x 512 forward takes minutes on this
# CPU), retifluidnet (fluid-only label set: its own table), fanogan (unsupervised fluid detection).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DATA_DIR=${DATA_DIR:-../shared/datasets}
OUT=${OUT:-logs/leaderboard/duke_cpu}
BUDGET=${BUDGET:-00:00:04:00}
SEEDS=${SEEDS:-1 2}
# <model config>[:<extra override>...]: the method's own loss where it has one.
ALL_METHODS="unet_small unet relaynet:loss=relaynet ynet ynet_noffc watnet lightreseg
  nnunet_style fouriernet:loss=fouriernet mgunet:loss=mgunet:augmentation.crop_size=[496,160]
  masood:loss=masood m2snet:loss=m2snet bionet:loss=bionet sd_layernet monai_attention_unet
  monai_unetplusplus monai_segresnet monai_swin_unetr smp_unet smp_deeplabv3plus"
METHODS=${METHODS:-$ALL_METHODS}

if [ ! -d "$DATA_DIR/duke_dme" ]; then
  echo "No Duke DME data under DATA_DIR=$DATA_DIR (expected $DATA_DIR/duke_dme); set DATA_DIR." >&2
  exit 2
fi

# A METHODS entry without overrides takes those of ALL_METHODS (METHODS="mgunet" keeps its loss).
overrides_of() {
  local entry=$1 known
  if [ "$entry" = "${entry%%:*}" ]; then
    for known in $ALL_METHODS; do
      [ "${known%%:*}" = "$entry" ] && entry=$known
    done
  fi
  [ "$entry" = "${entry%%:*}" ] || tr : '\n' <<< "${entry#*:}"
}

mkdir -p "$OUT"
for entry in $METHODS; do
  model=${entry%%:*}
  mapfile -t extra < <(overrides_of "$entry")
  for seed in $SEEDS; do
    run="$OUT/$model/s$seed"
    if [ -f "$run/metrics.json" ]; then
      echo "[leaderboard] $model seed $seed: done, kept ($run)"
      continue
    fi
    if [ -e "$run" ]; then
      mv "$run" "$run.unfinished-$(date +%Y%m%d-%H%M%S)"
    fi
    echo "[leaderboard] $model seed $seed: training for $BUDGET ($(date +%H:%M:%S))"
    "$PYTHON" train.py experiment=leaderboard_duke_cpu "model=$model" "seed=$seed" \
      "trainer.max_time=$BUDGET" "paths.data_dir=$DATA_DIR" logger=csv \
      "hydra.run.dir=$run" "${extra[@]}" > "$OUT/$model-s$seed.log" 2>&1 \
      || echo "[leaderboard] $model seed $seed FAILED: see $OUT/$model-s$seed.log" >&2
  done
done

"$PYTHON" scripts/leaderboard.py "$OUT" --out "$OUT/table"
