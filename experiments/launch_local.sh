#!/usr/bin/env bash
# One node, all visible GPUs, DDP (Lightning spawns one process per GPU).
#   experiments/launch_local.sh <experiment> [extra hydra overrides...]
# The hyperparameters live in conf/experiment/<experiment>.yaml, not here.
set -euo pipefail
EXP="${1:?usage: $0 <experiment> [overrides...]}"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HF_HUB_OFFLINE=1 WANDB_MODE="${WANDB_MODE:-offline}"
exec "${ROOT}/.venv/bin/vexpress-train" experiment="${EXP}" trainer=ddp "$@"
