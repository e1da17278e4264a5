#!/usr/bin/env bash
# SLURM through hydra-submitit-launcher (pip install -e '.[slurm]'): one job per experiment (or per sweep point),
# one node, one task per GPU. Requeued jobs resume from the stage's last.ckpt in the same run folder.
#   experiments/launch_slurm.sh <experiment> hydra.launcher.partition=<partition> [overrides...]
#   experiments/launch_slurm.sh paper_recipe dropout=cfg_only,paper    # a 2-job sweep
set -euo pipefail
EXP="${1:?usage: $0 <experiment> [overrides...]}"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HF_HUB_OFFLINE=1 WANDB_MODE="${WANDB_MODE:-offline}"
exec "${ROOT}/.venv/bin/vexpress-train" -m launcher=slurm trainer=ddp experiment="${EXP}" "$@"
