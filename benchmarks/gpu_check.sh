#!/usr/bin/env bash
# The full-size GPU check (benchmarks/gpu_check.py): one JSON line per check on stdout.
#   benchmarks/gpu_check.sh [--cpu-smoke] [--budget-s 450] [--out FILE] [--parity-dir DIR] [--checks a,b]
# Python: .venv/bin/python when present, else python3 (a GPU machine's own PyTorch). Packages the machine lacks
# (diffusers, bitsandbytes, ...) can travel as wheels in .gpu/whl/ (git-ignored); they are installed into a
# private folder first. A parity set copied to .gpu/parity_dev/ is used when ../shared is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
if compgen -G ".gpu/whl/*.whl" >/dev/null; then
  site=$(mktemp -d /tmp/vexpress-site.XXXXXX)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .gpu/whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -z "${VEXPRESS_PARITY_DIR:-}" ] && [ -f .gpu/parity_dev/config.json ]; then
  export VEXPRESS_PARITY_DIR="$PWD/.gpu/parity_dev"
fi
exec "$PY" benchmarks/gpu_check.py "$@"
