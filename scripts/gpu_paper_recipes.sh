#!/usr/bin/env bash
# The paper recipes of U-Net, ReLayNet and Y-Net on Duke DME, trained to their full schedules on
# one GPU in bf16, then compared by scripts/leaderboard.py (issue: "Paper recipes on a GPU").
#
#   bash scripts/gpu_paper_recipes.sh                    # GPU: full schedules, seeds 1 and 2
#   SEEDS=7 bash scripts/gpu_paper_recipes.sh            # one seed
#   SHORT=1 TRAINER=cpu bash scripts/gpu_paper_recipes.sh   # CPU rehearsal: 1 epoch, 3 batches of 2
#
# Settings (environment): DATA_DIR (folder holding duke_dme; default ../shared/datasets), OUT
# (default logs/paper_recipes/<time>), TRAINER (gpu), SEEDS ("1 2"), EXPERIMENTS
# ("unet_duke relaynet_duke ynet_duke"), VAL_EVERY (validate every N epochs; default: as each
# recipe says), SHORT (1: shortened schedule).
# Extra arguments are passed to every train.py run as overrides. Writes OUT/times.tsv (seconds
# per run), OUT/gpu.txt and OUT/leaderboard/ (leaderboard.md, .csv, .json, box plots).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DATA_DIR=${DATA_DIR:-../shared/datasets}
OUT=${OUT:-logs/paper_recipes/$(date +%Y-%m-%d_%H-%M-%S)}
TRAINER=${TRAINER:-gpu}
SEEDS=${SEEDS:-"1 2"}
EXPERIMENTS=${EXPERIMENTS:-"unet_duke relaynet_duke ynet_duke"}
VAL_EVERY=${VAL_EVERY:-}
SHORT=${SHORT:-0}

if [[ ! -d "$DATA_DIR/duke_dme" ]]; then
  echo "DATA_DIR=$DATA_DIR has no duke_dme folder; set DATA_DIR to the folder that holds it." >&2
  exit 2
fi
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
    || echo "no GPU (nvidia-smi unavailable)"; "$PY" -c "import torch; print('torch', torch.__version__)"; } \
  > "$OUT/gpu.txt"
cat "$OUT/gpu.txt"

short=()
if [[ "$SHORT" == "1" ]]; then
  # Small batches too: the full-size B-scans of the recipes at batch 10 need GBs on a CPU.
  short=(trainer.max_epochs=1 +trainer.limit_train_batches=3 trainer.precision=32-true
    dataset.datamodule.batch_size=2)
fi
# Only when asked: the recipes set their own validation interval (ReLayNet's split has no
# validation subjects; its recipe validates every 8 epochs, and early stopping never fires).
val=()
if [[ -n "$VAL_EVERY" ]]; then
  val=(trainer.check_val_every_n_epoch="$VAL_EVERY")
fi
printf "experiment\tseed\tseconds\n" > "$OUT/times.tsv"
for exp in $EXPERIMENTS; do
  for seed in $SEEDS; do
    start=$(date +%s)
    "$PY" train.py experiment="$exp" seed="$seed" trainer="$TRAINER" \
      paths.data_dir="$DATA_DIR" logger=csv "~callbacks.rich_progress_bar" \
      hydra.run.dir="$OUT/runs/$exp-s$seed" "${val[@]}" "${short[@]}" "$@"
    printf "%s\t%s\t%s\n" "$exp" "$seed" "$(( $(date +%s) - start ))" >> "$OUT/times.tsv"
  done
done
"$PY" scripts/leaderboard.py "$OUT/runs" --out "$OUT/leaderboard"
cat "$OUT/times.tsv"
