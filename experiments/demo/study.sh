#!/usr/bin/env bash
# The study that settles the demo's claims: make demo's three runs (recipe + two ablations) once per training seed,
# on the same 24 held-out clips, then recipe minus each ablation with 95 % bootstrap intervals over clips and seeds
# and a verdict per claim (python -m vexpress.evaluation.study). The foundation, benchmark and latents are cached
# and shared by every seed; a seed whose report exists is not run again (a killed study resumes).
#   experiments/demo/study.sh                      # seeds 7 8 9 10 11
#   experiments/demo/study.sh 7 8 [vexpress-demo overrides...]
# Output: $VEXPRESS_STUDY_DIR (default demo_output/study)/seed_<s>/report.* and study.{md,json}.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seeds=()
while [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; do seeds+=("$1"); shift; done
[[ ${#seeds[@]} -gt 0 ]] || seeds=(7 8 9 10 11)
OUT="${VEXPRESS_STUDY_DIR:-${ROOT}/demo_output/study}"
reports=()
for s in "${seeds[@]}"; do
  if [[ ! -f "${OUT}/seed_${s}/report.json" ]]; then
    "${ROOT}/.venv/bin/vexpress-demo" output_dir="${OUT}/seed_${s}" "train_overrides=[\"seed=${s}\"]" \
        sample_video.enabled=false eval.clips=24 "$@"
  fi
  reports+=("${OUT}/seed_${s}/report.json")
done
exec "${ROOT}/.venv/bin/python" -m vexpress.evaluation.study "${reports[@]}" --out "${OUT}" --min-seeds "${#seeds[@]}"
