"""Driving keypoints vs the official insightface points: per clip and per point mean distance (px, 512x512),
before (the earlier many-landmark weights) and after (the current definitions), leave-one-clip-out figures, the
time lag between ours and theirs, and what zero-phase smoothing would change.

    .venv/bin/python benchmarks/bench_kps.py /work/shared/samples                     # the shared clips
    .venv/bin/python benchmarks/bench_kps.py /work/shared/samples --loo                 # + leave-one-clip-out
    .venv/bin/python benchmarks/bench_kps.py /tmp/V-Express/test_samples/vasa-1 --smooth ''   # another folder
    .venv/bin/python benchmarks/bench_kps.py DIR --fit       # also print refitted weight tables for face.py

A clip is any folder under the given roots with ``gt.mp4`` + ``kps.pth`` (the official test samples), or a video
``X.mp4`` with ``X_face_info.pt`` next to it (official prepared training data: insightface ``kps[:3]`` of face 0).
Clips whose video content is identical are measured once. Mesh landmarks (mediapipe video mode, frames resized to
512x512, the same analysis as ``vexpress-extract-kps``) are cached per video under ``--cache``, so refits and
re-runs do not run the face mesh again. One process; mediapipe runs single-threaded per frame.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")  # before mediapipe is imported (in the functions below)

# The definition used before (ridge fit of ~20 landmarks per point on the three shared clips); kept here only to
# print the "before" column.
LEGACY_KPS_WEIGHTS = (
    {468: -0.0533, 469: -0.0695, 470: 0.0806, 471: 0.0458, 472: -0.0719, 33: 0.1359, 133: 0.1534, 159: 0.0211,
     145: -0.0225, 7: 0.0806, 163: 0.0429, 144: 0.0046, 153: -0.0124, 154: 0.0352, 155: 0.0972, 173: 0.1370,
     157: 0.0889, 158: 0.0367, 160: 0.0441, 161: 0.0896, 246: 0.1361},
    {473: -0.0640, 474: 0.0583, 475: 0.1941, 476: -0.0522, 477: -0.1811, 362: 0.1030, 263: 0.0947, 386: 0.0262,
     374: 0.0494, 249: 0.0859, 390: 0.0841, 373: 0.0751, 380: 0.0242, 381: 0.0375, 382: 0.0806, 398: 0.0948,
     384: 0.0830, 385: 0.0705, 387: 0.0178, 388: 0.0405, 466: 0.0773},
    {1: 0.4543, 4: -0.0065, 5: 0.0021, 2: -0.0545, 19: 0.0378, 94: 0.0302, 195: 0.0140, 197: 0.0193, 6: 0.0152,
     98: -0.2427, 327: 0.0789, 45: 0.0915, 275: -0.0925, 44: 0.1372, 274: -0.0403, 220: 0.2474, 440: -0.0222,
     48: 0.1669, 278: 0.1638},
)


def find_clips(roots: list[Path]) -> dict[str, tuple[Path, Path]]:
    """name -> (video, official points file); identical videos are kept once."""
    found: dict[str, tuple[Path, Path]] = {}
    seen: set[str] = set()
    for root in roots:
        root = root.expanduser().resolve()
        cands = []
        for kp in sorted(root.rglob("kps.pth")):
            if (kp.parent / "gt.mp4").is_file():
                cands.append((kp.parent / "gt.mp4", kp))
        for fi in sorted(root.rglob("*_face_info.pt")):
            vid = fi.with_name(fi.name[: -len("_face_info.pt")] + ".mp4")
            if vid.is_file():
                cands.append((vid, fi))
        for vid, ref in cands:
            digest = hashlib.sha1(vid.read_bytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            rel = vid.parent.relative_to(root) if vid.name == "gt.mp4" else Path(vid.stem)
            name = f"{root.name}/{rel}" if str(rel) != "." else root.name
            found[name] = (vid, ref)
    return found


def load_reference(path: Path) -> np.ndarray:
    if path.name.endswith("_face_info.pt"):
        from vexpress.utils.safe_load import safe_torch_load

        info = safe_torch_load(path, "official face info")
        return np.stack([np.asarray(frame[0]["kps"][:3], np.float32) for frame in info])
    from vexpress.kps.io import load_official_kps

    return load_official_kps(path).numpy()


def cached_mesh(video: Path, cache: Path) -> np.ndarray:
    from vexpress.preprocessing.clips import interpolate_invalid
    from vexpress.preprocessing.kps_calibration import mesh_sequence

    digest = hashlib.sha1(video.read_bytes()).hexdigest()[:16]
    f = cache / f"mesh_video512_{digest}.npy"
    if f.is_file():
        return np.load(f)
    lm, ok = mesh_sequence(video)
    if not ok.any():
        raise SystemExit(f"no face in {video}")
    lm = interpolate_invalid(lm, ok)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp.npy")
    np.save(tmp, lm)
    tmp.replace(f)
    return lm


def legacy_points(lm: np.ndarray) -> np.ndarray:
    m = np.zeros((3, lm.shape[-2]))
    for row, w in enumerate(LEGACY_KPS_WEIGHTS):
        for i, v in w.items():
            m[row, i] = v
        m[row] /= m[row].sum()
    return np.einsum("kn,tnd->tkd", m, lm.astype(np.float64))


LEGACY_FIT_LANDMARKS = tuple(tuple(w) for w in LEGACY_KPS_WEIGHTS)  # the anchor first, as fitted


def legacy_fit(meshes: list[np.ndarray], refs: list[np.ndarray], ridge: float = 0.05) -> np.ndarray:
    """The earlier procedure (ridge least squares of each point on ~20 landmarks, offsets from the anchor,
    normalised by the iris distance): (3, 478) weight matrix."""
    m = np.zeros((3, meshes[0].shape[-2]))
    for j, idx in enumerate(LEGACY_FIT_LANDMARKS):
        a_rows, b_rows = [], []
        for lm, k in zip(meshes, refs):
            t = min(len(lm), len(k))
            lm, k = lm[:t].astype(np.float64), k[:t].astype(np.float64)
            ref = lm[:, idx[0]]
            x = lm[:, idx] - ref[:, None]
            s = np.linalg.norm(lm[:, 468] - lm[:, 473], axis=-1)[:, None]
            for ax in range(2):
                a_rows.append(x[:, :, ax] / s)
                b_rows.append((k[:, j, ax] - ref[:, ax]) / s[:, 0])
        a, b = np.concatenate(a_rows), np.concatenate(b_rows)
        w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ b)
        m[j, list(idx)] = w
        m[j, idx[0]] += 1.0 - w.sum()
    return m


def legacy_leave_one_out(meshes: dict[str, np.ndarray], refs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from vexpress.preprocessing.kps_calibration import point_errors

    out = {}
    for n in meshes:
        others = [o for o in meshes if o != n]
        m = legacy_fit([meshes[o] for o in others], [refs[o] for o in others])
        out[n] = point_errors(np.einsum("kn,tnd->tkd", m, meshes[n].astype(np.float64)), refs[n])
    return out


def best_shift(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """Fractional time shift (frames, + = ours delayed) that minimises the mean distance; (shift, err, err at 0)."""
    t = np.arange(len(ours))
    flat = ours.reshape(len(ours), -1)
    inner = slice(2, len(ours) - 2)
    errs = []
    for s in np.linspace(-1.0, 1.0, 41):
        sh = np.stack([np.interp(t + s, t, flat[:, i]) for i in range(flat.shape[1])], -1).reshape(ours.shape)
        errs.append((float(np.linalg.norm(sh - ref, axis=-1)[inner].mean()), float(s)))
    e0 = [e for e, s in errs if abs(s) < 1e-9][0]
    e, s = min(errs)
    return s, e, e0


def table(title: str, errors: dict[str, np.ndarray]) -> dict:
    from vexpress.preprocessing.kps_calibration import POINTS, summarize

    s = summarize(errors)
    print(f"\n{title}")
    print(f"  {'clip':34s} {'frames':>6s} " + " ".join(f"{p:>9s}" for p in POINTS) + f" {'mean':>7s}")
    for name, r in s["clips"].items():
        print(f"  {name:34s} {r['frames']:6d} " + " ".join(f"{r[p]:9.2f}" for p in POINTS) + f" {r['mean']:7.2f}")
    print(f"  {'all frames':34s} {sum(r['frames'] for r in s['clips'].values()):6d} "
          + " ".join(f"{s['per_point'][p]:9.2f}" for p in POINTS) + f" {s['mean']:7.2f}"
          + f"   (mean of clip means {s['mean_of_clips']:.2f})")
    return s


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", type=Path, help="folders searched for clips")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "vexpress_kps_mesh_cache")
    ap.add_argument("--loo", action="store_true", help="leave-one-clip-out refits of the current definitions")
    ap.add_argument("--fit", action="store_true", help="refit on all clips and print the weight tables")
    ap.add_argument("--smooth", default="0.5,1.0,1.5", help="zero-phase smoothing sigmas (frames) to report")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)

    from vexpress.preprocessing.face import kps_from_landmarks
    from vexpress.preprocessing.kps_calibration import (
        fit_point_models,
        kps_weight_tables,
        leave_one_clip_out,
        point_errors,
        predict_points,
    )
    from vexpress.preprocessing.kps_extract import smooth_kps

    clips = find_clips(args.roots)
    if not clips:
        raise SystemExit(f"no clips (gt.mp4 + kps.pth, or X.mp4 + X_face_info.pt) under {args.roots}")
    meshes, refs = {}, {}
    for name, (video, ref) in clips.items():
        meshes[name] = cached_mesh(video, args.cache)
        refs[name] = load_reference(ref)
        if len(meshes[name]) != len(refs[name]):
            print(f"note: {name}: {len(meshes[name])} decoded frames, {len(refs[name])} official; "
                  "the common first frames are compared", file=sys.stderr)
    out: dict = {}
    ours = {n: kps_from_landmarks(m) for n, m in meshes.items()}
    out["before"] = table("before (legacy ~20-landmark weights), px",
                          {n: point_errors(legacy_points(m), refs[n]) for n, m in meshes.items()})
    out["after"] = table("after (current definitions), px", {n: point_errors(k, refs[n]) for n, k in ours.items()})
    if args.loo and len(clips) > 1:
        out["leave_one_out_before"] = table("leave-one-clip-out of the earlier procedure (~20 landmarks per point, "
                                            "ridge refit without the clip), px", legacy_leave_one_out(meshes, refs))
        out["leave_one_out"] = table("leave-one-clip-out (current definitions refitted without the clip), px",
                                     leave_one_clip_out(meshes, refs))
    print("\ntime lag (ours vs official; + = ours later), frames")
    out["lag"] = {}
    for n, k in ours.items():
        t = min(len(k), len(refs[n]))
        s, e, e0 = best_shift(k[:t].astype(np.float64), refs[n][:t])
        out["lag"][n] = {"shift": s, "err_at_best": e, "err_at_0": e0}
        print(f"  {n:34s} best shift {s:+.2f}  ({e0:.3f} -> {e:.3f} px)")
    sig = [float(x) for x in args.smooth.split(",") if x.strip()]
    if sig:
        print("\nzero-phase Gaussian smoothing of our points (mean over all frames, px)")
        out["smoothing"] = {}
        for sigma in [0.0] + sig:
            errs = np.concatenate([point_errors(smooth_kps(k, sigma), refs[n]) for n, k in ours.items()])
            out["smoothing"][sigma] = float(errs.mean())
            print(f"  sigma {sigma:4.2f}: {errs.mean():.3f}")
    if args.fit:
        coefs = fit_point_models(list(meshes.values()), list(refs.values()))
        w, v = kps_weight_tables(coefs)
        fit_err = np.concatenate([point_errors(predict_points(meshes[n], coefs), refs[n]) for n in meshes])
        print(f"\nrefit on all {len(meshes)} clips: mean {fit_err.mean():.3f} px")
        print("KPS_WEIGHTS =", w)
        print("KPS_ROT_WEIGHTS =", v)
        out["fit"] = {"coefficients": [c.tolist() for c in coefs], "weights": w, "rot_weights": v}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()
