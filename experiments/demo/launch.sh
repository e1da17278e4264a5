#!/usr/bin/env bash
# The embedded default on a CPU (same as `make demo`): recipe + both ablations on the synthetic benchmark.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
exec "${ROOT}/.venv/bin/vexpress-demo" "$@"
