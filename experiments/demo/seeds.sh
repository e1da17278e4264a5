#!/usr/bin/env bash
# make demo with several training seeds, then one table (mean +- sd over seeds per run and metric).
# The benchmark, tiny VAE and latents are cached after the first run; each seed then takes about 11 minutes on
# 2 CPU cores.
#   experiments/demo/seeds.sh 7 8 9 [vexpress-demo overrides...]
# Output: $VEXPRESS_SEEDS_DIR (default demo_output/seeds)/seed_<s>/report.* and seeds.{md,json}.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seeds=()
while [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; do seeds+=("$1"); shift; done
[[ ${#seeds[@]} -gt 0 ]] || { echo "usage: $0 SEED [SEED ...] [vexpress-demo overrides...]" >&2; exit 2; }
OUT="${VEXPRESS_SEEDS_DIR:-${ROOT}/demo_output/seeds}"
reports=()
for s in "${seeds[@]}"; do
  "${ROOT}/.venv/bin/vexpress-demo" output_dir="${OUT}/seed_${s}" "train_overrides=[\"seed=${s}\"]" \
      sample_video.enabled=false "$@"
  reports+=("${OUT}/seed_${s}/report.json")
done
exec "${ROOT}/.venv/bin/python" -m vexpress.demo.seeds "${reports[@]}" --out "${OUT}"
