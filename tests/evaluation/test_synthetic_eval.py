"""The synthetic-benchmark evaluator and its shuffled-audio control, on clips rendered by the real renderer."""

import numpy as np
import pytest

from vexpress.evaluation.synthetic import (
    SyntheticItem,
    evaluate_synthetic,
    mouth_control_summary,
    shuffled_audio_sources,
)
from vexpress.synthetic.face import render_background, render_frame
from vexpress.synthetic.measure import identity_of


def _render(record, mouth):
    """Frames of ``record``'s identity and head motion with the given mouth track (a 'generated' video)."""
    identity = identity_of(record)
    bg = render_background(identity, record.width, 4)
    pose = record.gt_pose.numpy()
    return np.stack([render_frame(identity, pose[t], tuple(float(v) for v in mouth[t]), record.width, 4, bg)
                     for t in range(record.num_frames)])


def test_shuffled_sources_are_a_derangement(synth_records):
    src = shuffled_audio_sources(synth_records, seed=3)
    assert all(src[r.id].id != r.id for r in synth_records)
    assert src == shuffled_audio_sources(synth_records, seed=3)


def test_control_separates_audio_following_from_audio_ignoring(synth_records, tmp_path):
    recs = synth_records[:2]
    sources = {recs[0].id: recs[1], recs[1].id: recs[0]}
    n = min(r.num_frames for r in recs)
    follower, ignorer = [], []
    for rec in recs:
        own = rec.gt_mouth.numpy()[:n]
        other = sources[rec.id].gt_mouth.numpy()[:n]
        follower += [SyntheticItem(rec, _render(rec, own)[:n], rec.fps),
                     SyntheticItem(rec, _render(rec, other)[:n], rec.fps, audio_record=sources[rec.id])]
        still = np.tile([[0.3, 0.5]], (n, 1))
        frames = _render(rec, still)[:n]
        ignorer += [SyntheticItem(rec, frames, rec.fps), SyntheticItem(rec, frames, rec.fps, sources[rec.id])]

    res = evaluate_synthetic(follower, run_name="follows", output_dir=tmp_path / "f", frame_stride=3)
    ctl = mouth_control_summary(res)
    assert ctl["mouth_err_correct"] < 0.05
    assert ctl["ratio"] > 3.0
    assert res.controls["mouth_err_shuffled_over_correct"] == pytest.approx(ctl["ratio"])
    shuffled = res.summary["follows [shuffled audio]"]
    assert shuffled["mouth_err_vs_audio"] < 0.05  # it follows the audio it was given
    assert res.summary["follows"]["pose_err"] < 1.0 and res.summary["follows"]["identity_err"] < 0.03
    gt = res.summary["ground truth"]
    assert gt["clips"] == 2 and gt["mouth_err"] < 0.05

    res2 = evaluate_synthetic(ignorer, run_name="ignores", frame_stride=3, include_gt=False)
    assert mouth_control_summary(res2)["ratio"] == pytest.approx(1.0, abs=0.05)
    assert "ground truth" not in res2.summary


def test_mouth_error_split_finds_a_known_gain_offset_and_lag():
    from vexpress.evaluation.synthetic import mouth_error_split

    rng = np.random.default_rng(0)
    true = np.clip(rng.normal(0.2, 0.15, size=(6, 20)), 0, 1)
    scaled = 1.3 * true + 0.02  # a mouth that opens 30 % too far, plus a small offset
    split = mouth_error_split(scaled, true)
    assert split["gain"] == pytest.approx(1.3) and split["offset"] == pytest.approx(0.02)
    assert split["err_after_line"] == pytest.approx(0.0, abs=1e-9) and split["corr"] == pytest.approx(1.0)
    assert split["mouth_err"] == pytest.approx(np.abs(scaled - true).mean())
    assert split["best_lag"] == 0 and len(split["err_by_frame"]) == 20
    assert split["clip_gain"] == pytest.approx([1.3] * 6)

    # small openings drawn at half their size, large ones right, closed ones closed: by_opening says which
    true_bands = np.tile([0.0, 0.0, 0.1, 0.1, 0.3, 0.4], (3, 1))
    shy = np.where((true_bands > 0) & (true_bands < 0.2), 0.5 * true_bands, true_bands)
    closed, small, large = mouth_error_split(shy, true_bands, max_lag=1)["by_opening"]
    assert closed["frames"] == small["frames"] == large["frames"] == 6
    assert closed["err"] == 0.0 and np.isnan(closed["ratio"])
    assert small["ratio"] == pytest.approx(0.5) and small["err"] == pytest.approx(0.05)
    assert large["ratio"] == pytest.approx(1.0) and large["true"] == pytest.approx(0.35)
    assert closed["band"] == [None, 0.02] and small["band"] == [0.02, 0.2] and large["band"] == [0.2, None]

    late = np.concatenate([true[:, :1], true[:, :-1]], axis=1)  # measured frame t shows true frame t - 1
    assert mouth_error_split(late, true)["best_lag"] == 1
    early = np.concatenate([true[:, 1:], true[:, -1:]], axis=1)
    assert mouth_error_split(early, true)["best_lag"] == -1

    edge = true.copy()
    edge[:, 0] += 0.1  # a spurious opening in the window's first frame only
    by_frame = mouth_error_split(edge, true)["err_by_frame"]
    assert by_frame[0] == pytest.approx(0.1) and max(by_frame[1:]) == 0.0

    from vexpress.errors import InputError

    with pytest.raises(InputError, match="clips, frames"):
        mouth_error_split(true[:, :4], true[:, :4])


def test_appearance_error_split_separates_a_clip_colour_from_flicker():
    from vexpress.errors import InputError
    from vexpress.evaluation.synthetic import appearance_error_split

    rng = np.random.default_rng(0)
    ref = rng.uniform(0.2, 0.8, size=(5, 6))  # 5 clips, two regions
    cast = np.array([0.0, -0.03, 0.02, 0.01, 0.0, 0.0])  # a colour cast on the first region, for every frame
    flicker = rng.normal(0.0, 0.01, size=(5, 8, 6))
    flicker -= flicker.mean(axis=1, keepdims=True)  # zero mean within each clip
    split = appearance_error_split(ref[:, None] + cast + flicker, ref, regions=["background", "skin"])
    assert split["clip_rms"] == pytest.approx(np.sqrt(np.mean(cast ** 2)))
    assert split["frame_rms"] == pytest.approx(np.sqrt(np.mean(flicker ** 2)))
    assert split["rms"] ** 2 == pytest.approx(split["clip_rms"] ** 2 + split["frame_rms"] ** 2)
    assert split["by_region"]["background"]["signed_mean_rgb"] == pytest.approx([0.0, -0.03, 0.02], abs=1e-12)
    assert split["toward_mean"] == pytest.approx(0.0, abs=1e-9) and len(split["rms_by_frame"]) == 8

    mean_colour = ref.mean(axis=0)  # every clip drawn half-way to the average colour: slope -0.5
    pulled = np.repeat((0.5 * ref + 0.5 * mean_colour)[:, None], 4, axis=1)
    assert appearance_error_split(pulled, ref)["toward_mean"] == pytest.approx(-0.5)

    outside = ref[:, None] + np.zeros((5, 3, 6))
    outside[:, :, 3:] = np.nan  # a region outside every frame is left out, not propagated
    assert appearance_error_split(outside, ref)["rms"] == pytest.approx(0.0)
    with pytest.raises(InputError, match="3 x regions"):
        appearance_error_split(np.zeros((2, 3, 5)), np.zeros((2, 5)))
