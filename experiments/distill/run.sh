#!/usr/bin/env bash
# Issue 11's few-step study on a finished `make demo` (python -m vexpress.demo.distill; README.md here): distil the
# demo recipe's final export into a student (stage=distill), then generate the demo report's held-out clips with the
# teacher (25 DDIM steps, guidance 3.5) and the student (sampler=lcm, 1 branch, 1/2/4/8 steps) in one process, and
# write <demo output>/distill/report.{md,json}.
#   experiments/distill/run.sh                                   # on demo_output (make demo's output folder)
#   experiments/distill/run.sh --steps 600 --lr 5e-5             # options: python -m vexpress.demo.distill --help
#   VEXPRESS_DEMO_OUTPUT=/path/to/demo experiments/distill/run.sh [demo overrides KEY=VALUE...]
# Demo overrides: the conf/demo.yaml overrides the demo ran with (paths.cache_dir=..., train_overrides=[...]);
# none for a plain `make demo`. Runs from the repository root, as make demo does (the default paths.root_dir).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${ROOT}"
exec "${ROOT}/.venv/bin/python" -m vexpress.demo.distill --demo-output "${VEXPRESS_DEMO_OUTPUT:-${ROOT}/demo_output}" "$@"
