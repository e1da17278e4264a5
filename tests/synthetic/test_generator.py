"""The synthetic benchmark generator: determinism, exact keypoints, audio-driven mouth, dataset + cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vexpress.synthetic.face import (
    KPS_TEMPLATE,
    face_to_image,
    kps_from_pose,
    mouth_landmarks,
    pose_from_kps,
    render_frame,
    sample_identity,
)
from vexpress.synthetic.generate import SynthConfig, ensure_synthetic_dataset, generate_clip, generate_dataset
from vexpress.synthetic.speech import mouth_track, plan_syllables, synthesize

SMALL = dict(num_identities=3, heldout_identities=1, clips_per_identity=1, seconds=1.6, size=32, supersample=2)


def test_clip_is_deterministic_by_seed():
    cfg = SynthConfig(**SMALL)
    a, b = generate_clip(cfg, 1, 0), generate_clip(cfg, 1, 0)
    assert np.array_equal(a["frames"], b["frames"]) and np.array_equal(a["audio"], b["audio"])
    c = generate_clip(SynthConfig(**{**SMALL, "seed": 1}), 1, 0)
    assert not np.array_equal(a["audio"], c["audio"])
    d = generate_clip(cfg, 2, 0)
    assert a["identity"] != d["identity"]


def test_pose_kps_roundtrip_and_rendered_eyes():
    rng = np.random.default_rng(0)
    pose = np.array([[33.0, 30.5, 21.0, 0.12], [30.0, 34.0, 23.0, -0.1]])
    kps = kps_from_pose(pose)
    assert kps.shape == (2, 3, 2)
    assert np.allclose(pose_from_kps(kps), pose, atol=1e-4)
    assert (kps[:, 0, 0] < kps[:, 1, 0]).all()  # left-in-image eye first
    ident = sample_identity(rng, "x")
    img = render_frame(ident, pose[0], (0.0, 0.5), 64, 4).astype(int)
    for x, y in kps[0, :2]:  # the pupil (near black) sits exactly at each eye point
        assert img[int(y), int(x)].sum() < 200
    assert np.allclose(face_to_image(KPS_TEMPLATE, pose[0]), kps[0], atol=1e-4)


def test_mouth_follows_audio_only():
    rng = np.random.default_rng(3)
    syl = plan_syllables(rng, 4.0)
    wave, voicing, vw = synthesize(syl, 4.0, 150.0, 1.0, rng)
    mouth, vowel = mouth_track(voicing, vw, 100, 25.0)
    assert wave.dtype == np.float32 and wave.shape == (64000,) and np.abs(wave).max() <= 1.0
    rms = np.array([np.sqrt(np.mean(wave[i * 640:(i + 1) * 640] ** 2)) for i in range(100)])
    assert np.corrcoef(rms, mouth[:, 0])[0, 1] > 0.6
    assert (mouth[vowel < 0, 0] == 0).all() and (mouth[vowel >= 0, 0] > 0).all()
    assert 0.3 < (vowel >= 0).mean() < 0.95  # both speech and pauses
    assert len(set(vowel[vowel >= 0].tolist())) >= 3


def test_mouth_landmarks_order():
    lm = mouth_landmarks(np.array([[0.8, 0.6]]), np.array([32.0, 32.0, 20.0, 0.0]))[0]
    outer, inner = lm[:20], lm[20:]
    assert outer[0, 0] < outer[10, 0]  # left corner first, right corner at 10
    assert outer[5, 1] < outer[15, 1] and inner[5, 1] < inner[15, 1]  # upper lip (5) above lower lip (15)
    assert outer[:, 0].min() < inner[:, 0].min()


def test_dataset_splits_video_and_cache(tmp_path):
    from vexpress.audio import load_audio
    from vexpress.data.records import load_manifest
    from vexpress.data.video import probe_video

    cfg = SynthConfig(**SMALL)
    root = ensure_synthetic_dataset(cfg, cache_dir=tmp_path, workers=1)
    assert root.name == cfg.key()
    recs = load_manifest(root)
    assert len(recs) == 3
    assert {r.split for r in recs} == {"train", "heldout"}
    train_ids = {r.identity for r in recs if r.split == "train"}
    assert train_ids.isdisjoint({r.identity for r in recs if r.split == "heldout"})
    rec = recs[0]
    info = probe_video(rec.video)
    assert (info.width, info.height, info.num_frames, info.has_audio) == (32, 32, rec.num_frames, True)
    assert rec.kps.shape == (rec.num_frames, 3, 2) and rec.gt_mouth.shape == (rec.num_frames, 2)
    assert rec.mouth.shape == (rec.num_frames, 40, 2) and rec.valid.all()
    assert rec.audio_features.shape[1] == 80 and rec.audio_encoder.startswith("logmel")
    assert abs(load_audio(rec.video).numel() - rec.audio.numel()) < 2048  # AAC padding
    # reuse: the same config returns the same folder without rewriting it
    stamp = (root / "manifest.json").stat().st_mtime_ns
    assert ensure_synthetic_dataset(cfg, cache_dir=tmp_path, workers=1) == root
    assert (root / "manifest.json").stat().st_mtime_ns == stamp
    assert SynthConfig(**{**SMALL, "size": 48}).key() != cfg.key()
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["kind"] == "synthetic" and manifest["config"]["size"] == 32


def test_resume_after_partial(tmp_path):
    from vexpress.data.records import clip_dir, scan_clips

    cfg = SynthConfig(**SMALL)
    generate_dataset(cfg, tmp_path, workers=1)
    # simulate an interrupted run: one clip missing, a leftover temporary folder
    import shutil

    victim = scan_clips(tmp_path)[1]
    shutil.rmtree(victim.dir)
    (tmp_path / "clips" / ".x.abc.tmp-part").mkdir()
    keep = clip_dir(tmp_path, scan_clips(tmp_path)[0].id) / "meta.json"
    stamp = keep.stat().st_mtime_ns
    generate_dataset(cfg, tmp_path, workers=1)
    assert len(scan_clips(tmp_path)) == 3
    assert keep.stat().st_mtime_ns == stamp  # finished clips are not redone
    assert not (tmp_path / "clips" / ".x.abc.tmp-part").exists()


def test_bad_config():
    from vexpress.errors import InputError

    with pytest.raises(InputError):
        SynthConfig(num_identities=2, heldout_identities=2)
    with pytest.raises(InputError):
        SynthConfig.from_dict({"sizee": 64})


def test_cli_run(tmp_path):
    from hydra import compose, initialize_config_dir

    from vexpress.cli._common import config_path
    from vexpress.cli.synth import run

    with initialize_config_dir(config_dir=config_path(), version_base="1.3"):
        cfg = compose("synth", overrides=[f"output={tmp_path / 'set'}", "synthetic.num_identities=2",
                                          "synthetic.heldout_identities=1", "synthetic.clips_per_identity=1",
                                          "synthetic.seconds=1.0", "synthetic.size=32", "workers=1",
                                          f"preview={tmp_path / 'p.png'}", f"cache_dir={tmp_path}"])
    root = run(cfg)
    assert (root / "manifest.json").is_file() and (tmp_path / "p.png").is_file()


def test_two_jobs_generating_one_set_both_finish(tmp_path):
    """Two jobs that ask for the same synthetic set at once (a multirun, study seeds side by side) both get it whole.

    The second job starts once the first has written a clip. They used to share the '.building' folder unguarded:
    the first to finish renamed it away under the other, or cleaned the other's half-written clip."""
    import threading

    from vexpress.data.records import MANIFEST, load_manifest

    cfg = SynthConfig(**SMALL)
    first_clip_written, second_started = threading.Event(), threading.Event()
    results, errors = {}, []

    def progress_of(name):
        def progress(done, total):
            if name == "a" and done == 1:
                first_clip_written.set()
                second_started.wait(timeout=5)  # a job that waits for the lock never reports: go on after 5 s
            if name == "b":
                second_started.set()
        return progress

    def job(name):
        try:
            if name == "b":
                first_clip_written.wait(timeout=60)
            results[name] = ensure_synthetic_dataset(cfg, cache_dir=tmp_path, workers=1, progress=progress_of(name))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results["a"] == results["b"] and (results["a"] / MANIFEST).is_file()
    assert len(load_manifest(results["a"])) == 3
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [cfg.key()]  # no building folder left


def test_a_cache_folder_that_cannot_take_files_is_a_one_line_error(tmp_path):
    from vexpress.errors import InputError

    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(InputError, match="synthetic cache folder .*taken") as exc:
        ensure_synthetic_dataset(SynthConfig(**SMALL), cache_dir=taken, workers=1)
    assert "\n" not in str(exc.value) and taken.read_text() == "x"


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(),
                    reason="reads process parents from Linux /proc")
@pytest.mark.slow
def test_sigterm_stops_a_parallel_run_at_once_and_cleanly(tmp_path):
    """``kill`` on a ``vexpress-synth`` with 2 workers: the run ends as stopped (exit 143) without waiting for its
    queue, no worker outlives it, no temporary clip folder is left, and the rerun finishes the set."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers.processes import assert_all_end, children, kill_all, pool_workers
    from vexpress.data.records import is_clip_done, load_manifest
    from vexpress.utils.paths import REPO_ROOT

    out = tmp_path / "out"
    n = 16
    cmd = [sys.executable, "-m", "vexpress.cli.synth", f"output={out}", "workers=2", f"synthetic.num_identities={n}",
           "synthetic.heldout_identities=2", "synthetic.clips_per_identity=1", "synthetic.seconds=2.0",
           f"hydra.run.dir={tmp_path / 'logs'}"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            workers |= pool_workers(proc.pid)
            if len(workers) >= 2 and (out / "clips").is_dir() and \
                    any(is_clip_done(out, p.name) for p in (out / "clips").iterdir() if not p.name.startswith(".")):
                break
            time.sleep(0.1)
        assert proc.poll() is None and len(workers) >= 2, "the run ended before it could be stopped"
        everyone = set(children(proc.pid))
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=120)  # a liveness bound, not a speed claim
        assert code == 128 + signal.SIGTERM
        assert_all_end(everyone, 20, "processes outlived the stopped run")
    finally:
        kill_all(workers)
        if proc.poll() is None:
            proc.kill()
    done = [p.name for p in (out / "clips").iterdir() if not p.name.startswith(".")]
    assert 1 <= len(done) < n, "the stop came too late to test anything"
    assert not [p.name for p in out.rglob(".*")], "a stopped run left temporary files"
    rerun = subprocess.run([a if a != "workers=2" else "workers=1" for a in cmd], env=env, capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert len(load_manifest(out)) == n
