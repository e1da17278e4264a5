#!/usr/bin/env bash
# released on one node with all GPUs; pass launcher=slurm-style options through experiments/launch_slurm.sh instead.
exec "$(dirname "${BASH_SOURCE[0]}")/../launch_local.sh" released "$@"
