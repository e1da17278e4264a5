"""vexpress-eval as users run it: folders in, reports out; multirun gives one comparison table; bad input = one line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vexpress.audio import save_wav
from vexpress.data.video import write_video
from vexpress.kps.io import save_kps


def _folders(records, root: Path, blur: int):
    """gt_dir in the per-clip folder layout (gt.mp4, aud.wav, kps.pth, ref.png) and a folder of generated videos."""
    import cv2
    from PIL import Image

    gt_dir, gen_dir = root / "gt", root / f"gen_blur{blur}"
    for rec in records:
        d = gt_dir / rec.id
        d.mkdir(parents=True, exist_ok=True)
        frames = rec.frames(range(rec.num_frames))
        if not (d / "gt.mp4").exists():
            shutil.copy(rec.video, d / "gt.mp4")
            save_wav(d / "aud.wav", rec.audio)
            save_kps(d / "kps.pth", rec.kps * (512.0 / rec.width))  # kps files are in 512x512 coordinates
            Image.fromarray(frames[0]).save(d / "ref.png")
        blurred = np.stack([cv2.GaussianBlur(f, (0, 0), blur) for f in frames])
        write_video(gen_dir / f"{rec.id}.mp4", blurred, rec.fps)
    return gt_dir, gen_dir


def _cli(args, cwd, env_extra=None):
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", VEXPRESS_CACHE=str(Path(cwd) / "cache"),
               **(env_extra or {}))
    exe = Path(sys.executable).parent / "vexpress-eval"
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_folders_multirun_comparison(synth_records, tmp_path):
    recs = synth_records[:2]
    gt_dir, gen1 = _folders(recs, tmp_path, 1)
    _, gen3 = _folders(recs, tmp_path, 3)
    sweep = tmp_path / "sweep"
    proc = _cli(["-m", f"generated_dir={gen1},{gen3}", f"gt_dir={gt_dir}", "metrics=[lmd,kps,lipsync,fid]",
                 "wandb.enabled=true", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "eval_summary.json").read_text())
        assert "ground truth" in summary["summary"] and "fid" in summary["skipped"]
        assert "weights-inception" in summary["skipped"]["fid"]
        assert (sweep / job / "per_clip.csv").is_file() and (sweep / job / "eval_summary.md").is_file()
        assert list((sweep / job / "wandb").glob("offline-run-*"))
    table = (sweep / "comparison.md").read_text()
    assert "gen_blur1" in table and "gen_blur3" in table and table.count("| ground truth |") == 1
    rows = json.loads((sweep / "comparison.json").read_text())["rows"]
    lmd = {r["run"]: r["lmd_aligned"] for r in rows}
    assert lmd["ground truth"] < lmd["gen_blur1"] <= lmd["gen_blur3"] * 1.5


def test_cli_bad_input_is_one_line(tmp_path):
    proc = _cli([f"generated_dir={tmp_path / 'nope'}", "wandb.enabled=false", f"hydra.run.dir={tmp_path / 'run'}"],
                tmp_path)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "generated_dir" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_run_mode_generates_then_scores(synth_root, tmp_path):
    """run + manifest: the clips are generated first (tiny random model, resumable), then scored."""
    run_dir = tmp_path / "run"
    args = ["run=tiny", f"manifest={synth_root}", "split=heldout", "max_clips=1", "metrics=[kps,synthetic]",
            "metrics.synthetic.frame_stride=5", "+generation.options.num_inference_steps=1", "wandb.enabled=false",
            f"hydra.run.dir={run_dir}"]
    proc = _cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((run_dir / "eval_summary.json").read_text())
    assert summary["run"] == "tiny" and set(summary["summary"]) == {"tiny", "ground truth"}
    generated = list((tmp_path / "cache" / "vexpress" / "eval" / "generated").rglob("*.mp4"))
    assert len(generated) == 1
    stamp = generated[0].stat().st_mtime_ns
    proc = _cli(args[:-1] + [f"hydra.run.dir={tmp_path / 'run2'}"], tmp_path)  # rerun: nothing regenerated
    assert proc.returncode == 0 and generated[0].stat().st_mtime_ns == stamp
