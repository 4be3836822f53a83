#!/usr/bin/env bash
# The main job on the built-in default, from a fresh Debian machine, offline:
#   1. install the Debian packages and build the tools (scripts/setup.sh)
#   2. prepare the medical task suite from the data folder (MING_DATA, default ../shared/data)
#   3. import the base model: stories260K, a real pretrained LLaMA-architecture model
#   4. train, from the same frozen base on the same multi-task mixture (no task labels), a plain
#      LoRA and a MING-MOE MoLoRA with the same number of trainable parameters
#   5. evaluate base, LoRA and MoLoRA on the held-out split of every task and print one table
#   6. show how the MoLoRA router spreads the test split's tokens over experts (SVG heatmaps)
# Each step is a target of share/examples/Makefile, cached in runs/quickstart: a second run skips
# what is done, and a run killed midway continues (training resumes from its last checkpoint).
#
#   scripts/quickstart.sh                      # everything
#   RUN=runs/try2 SEED=7 LIMIT=100 scripts/quickstart.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export MING_DATA=${MING_DATA:-$root/../shared/data}
RUN=${RUN:-runs/quickstart}
start=$(date +%s)

if [[ ! -d "$MING_DATA" ]]; then
  echo "quickstart: data folder '$MING_DATA' not found; set MING_DATA (see README: The data folder)" >&2
  exit 2
fi

echo "== 1/6 set-up: Debian packages and build" >&2
MING_TARGETS="ming-train ming-eval ming-merge ming-route-stats ming-chat" "$root/scripts/setup.sh"

make_args=(-f "$root/share/examples/Makefile" RUN="$RUN" MING_DATA="$MING_DATA")
[[ -n "${SEED:-}" ]] && make_args+=(SEED="$SEED")
[[ -n "${LIMIT:-}" ]] && make_args+=(LIMIT="$LIMIT")
step() { echo "== $1" >&2; shift; make --no-print-directory "${make_args[@]}" "$@"; }
step "2/6 medical task suite -> $RUN/suite" suite
step "3/6 base model (stories260K, imported) -> $RUN/base" base mix
step "4/6 training LoRA and MoLoRA (same trainable-parameter count) -> $RUN/{lora,molora}" lora molora
step "5/6 evaluating base, LoRA, MoLoRA on every task's test split" table
step "6/6 routing statistics of the MoLoRA model" routes

echo
echo "Held-out results (task x model), from $RUN/eval-*/metrics.json:"
cat "$RUN/table.txt"
echo
echo "Routing of the MoLoRA experts over the test split:"
cat "$RUN/routes-summary.txt"
echo "Heatmaps (SVG): $(ls "$RUN"/routes/*.svg 2>/dev/null | head -3 | tr '\n' ' ')..."
echo "Per-example predictions: $RUN/eval-*/predictions.jsonl"
cat <<MSG

Done in $(( $(date +%s) - start )) s. Next steps:
  - chat with the result:   build/ming-chat --model $RUN/base --adapter $RUN/molora --template raw
  - a real base (Qwen1.5):  build/ming-train --config share/configs/ming-moe.yaml \\
        --set model_name_or_path=/models/Qwen1.5-1.8B-Chat --set dataset.0.path=$RUN/train-mix.jsonl
  - on a GPU:               add --set device=cuda (build against pip torch: see scripts/setup.sh)
  - on a SLURM cluster:     sbatch share/examples/slurm-train.sbatch
  - step by step:           make -f share/examples/Makefile <suite|base|mix|lora|molora|eval-base|eval-lora|eval-molora|table|routes>
MSG
