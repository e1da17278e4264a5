"""benchmarks/gpu_check.sh runs end to end in its CPU smoke mode, so it works the first time a GPU appears.

The smoke mode runs every check of the GPU script (environment, official parity, guided denoiser calls per dtype,
end-to-end generation, one training step of each stage, the compile check's CPU skip) with the tiny model at 64x64.
It asserts that every line is well-formed and ok, not any speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_check(tmp_path):
    out = tmp_path / "rows.jsonl"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-smoke", "--threads", "2",
                           "--budget-s", "3000", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=1800)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rows == [json.loads(line) for line in out.read_text().splitlines()]
    by = {}
    for row in rows:
        by.setdefault(row["check"], []).append(row)
    assert by["env"][0]["device"] == "cpu"
    parity = by["parity"][0]
    if parity["status"] == "ok":
        assert parity["worst_rel_err"] <= 1e-4
        assert set(parity["rel_err"]) >= {"unet_out_cond", "unet_out_uncond", "final_latents", "ref_bank"}
    else:
        assert parity["status"] == "skipped" and "parity" in parity["reason"]
    assert {r["dtype"] for r in by["unet_call"]} == {"fp32", "bf16"}
    assert all(r["status"] == "ok" and r["ms_per_call"] > 0 for r in by["unet_call"])
    gens = by["generate"]
    assert [r["status"] for r in gens] == ["ok", "ok"]
    assert [r["frames"] for r in gens] == [9, 18]  # round(duration * 30 fps) for 0.3 s and 0.6 s
    stages = {r["stage"]: r for r in by["train"]}
    assert set(stages) == {"image", "audio_motion", "joint"}
    for r in stages.values():
        assert r["status"] == "ok" and r["trainable_params"] > 0 and len(r["loss"]) == 2
    assert stages["audio_motion"]["gradient_checkpointing"] is True
    assert by["compile"][0]["status"] == "skipped"
    assert by["summary"][0]["status"] == "ok" and by["summary"][0]["errors"] == 0


@pytest.mark.gpu
def test_gpu_check_on_cuda(tmp_path):
    """On a CUDA machine (`make test-gpu`): official parity on the GPU and one guided call per precision."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip(reason="needs a CUDA device")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--checks", "env,parity,unet_call",
                           "--budget-s", "600"], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"})
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(r["status"] in ("ok", "skipped") for r in rows)
    assert {r["dtype"] for r in rows if r["check"] == "unet_call"} == {"fp32", "tf32", "fp16", "bf16"}
