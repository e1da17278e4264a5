"""Metric specifications: what each metric of the evaluation job needs, computes and records.

A spec is a small dataclass built from ``conf/metrics/<name>.yaml`` (``_target_``) or directly in Python. It turns
one video of a :class:`~vexpress.evaluation.pairs.ClipPair` into per-clip values (``level="clip"``) or into features
for a set-level Fréchet distance (``level="set"``), and describes its protocol and weight files for the report.

``setup()`` raises :class:`MetricUnavailable` when a metric cannot run (typically: its weight file is not there);
the job then skips that metric and writes the reason into the report instead of crashing.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from vexpress.errors import InputError, VExpressError
from vexpress.evaluation.media import (
    FaceTrack,
    Video,
    face_track,
    image_face,
    load_audio_file,
    load_image,
    load_kps_file,
    time_align,
)

NAN = float("nan")


class MetricUnavailable(Exception):
    """A metric cannot run in this job (missing weights, missing input); the message goes into the report."""


class ClipItem:
    """Lazy access to everything one clip's metrics need (videos, face tracks, audio, keypoints, reference)."""

    def __init__(self, pair, cache_dir: Optional[Path] = None):
        self.pair = pair
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.notes: List[str] = []
        self._memo: Dict[str, Any] = {}

    @property
    def clip_id(self) -> str:
        return self.pair.clip_id

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def video(self, role: str) -> Optional[Video]:
        return self.pair.generated if role == "model" else self.pair.gt

    def track(self, role: str) -> FaceTrack:
        key = f"track_{role}"
        if key not in self._memo:
            self._memo[key] = face_track(self.video(role), self.cache_dir)
        return self._memo[key]

    def audio(self) -> Optional[np.ndarray]:
        """Driving audio, 16 kHz mono (explicit audio, else the ground truth's track, else the generated one's)."""
        if "audio" not in self._memo:
            a = self.pair.audio
            if isinstance(a, np.ndarray):
                wave = a.astype(np.float32).reshape(-1)
            elif a is not None:
                wave = load_audio_file(a)
            else:
                wave = None
                for v in (self.pair.gt, self.pair.generated):
                    if v is not None and wave is None:
                        wave = v.audio()
            self._memo["audio"] = wave
        return self._memo["audio"]

    def driving_kps(self) -> Optional[Dict[str, Any]]:
        """``{"kps": (T, 3, 2), "size": (W, H) | None, "fps": float, "source": str}`` or None."""
        if "kps" not in self._memo:
            k = self.pair.driving_kps
            ref_video = self.pair.gt or self.pair.generated
            out = None
            if k is not None:
                arr = np.asarray(k, dtype=np.float64) if isinstance(k, np.ndarray) else load_kps_file(k)
                out = {"kps": arr, "size": self.pair.driving_kps_size, "fps": ref_video.fps,
                       "source": "driving keypoints"}
            elif self.pair.gt is not None:
                tr = self.track("gt")
                out = {"kps": tr.kps, "size": tr.size, "fps": self.pair.gt.fps,
                       "source": "keypoints detected on the ground truth"}
            self._memo["kps"] = out
        return self._memo["kps"]

    def reference_image(self) -> Optional[np.ndarray]:
        if "ref" not in self._memo:
            r = self.pair.reference
            if isinstance(r, np.ndarray):
                img = r
            elif r is not None:
                img = load_image(r)
            elif self.pair.gt is not None:
                img = self.pair.gt.frames()[0]
            else:
                img = None
            self._memo["ref"] = img
        return self._memo["ref"]

    def reference_landmarks(self) -> Optional[np.ndarray]:
        if "ref_lm" not in self._memo:
            img = self.reference_image()
            self._memo["ref_lm"] = image_face(img) if img is not None else None
        return self._memo["ref_lm"]


@dataclass
class MetricSpec:
    """Base class; subclasses set ``name``, ``level`` and ``columns`` (column -> "min" | "max" | "info")."""

    name = "metric"
    level = "clip"
    columns: Dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def setup(self) -> None:
        """Load weights etc.; raise :class:`MetricUnavailable` to skip the metric with a note."""

    def setup_notes(self) -> List[str]:
        """Remarks for the report after :meth:`setup` (e.g. an optional part that could not run)."""
        return [getattr(self, "_note")] if getattr(self, "_note", None) else []

    def config(self) -> Dict[str, Any]:
        """Settings that change the values (part of cache keys and of the report)."""
        out = {}
        for f in fields(self):
            if f.name == "columns" or f.name.startswith("_"):
                continue
            v = getattr(self, f.name)
            out[f.name] = v if isinstance(v, (int, float, str, bool, type(None), list, tuple, dict)) else repr(v)
        return out

    def protocol(self) -> Dict[str, Any]:
        return {}

    def weight_files(self) -> List[Dict[str, Any]]:
        return []

    # level == "clip"
    def clip(self, item: ClipItem, role: str) -> Dict[str, float]:
        raise NotImplementedError

    # level == "set"
    def features(self, video: Video) -> np.ndarray:
        raise NotImplementedError

    def compute(self, real: List[np.ndarray], fake: List[np.ndarray]) -> Dict[str, float]:
        raise NotImplementedError


def _weights_note(metric: str, err: VExpressError) -> str:
    return f"{metric} skipped: {err}"


def _weight_info(path, role) -> List[Dict[str, Any]]:
    from vexpress.metrics.weights import file_info

    return [file_info(path, role)] if path else []


class _Passthrough(torch.nn.Module):
    """Feeds precomputed features to torchmetrics' FID (its ``inception`` slot)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


# ---------------------------------------------------------------------------------------------------------------
# Set-level: FID and FVD


@dataclass
class FIDSpec(MetricSpec):
    """Per-frame FID of generated frames against ground-truth frames (torchmetrics FID).

    Attributes:
        weights_path: local TF Inception-v3 weights (torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``).
        extractor: alternatively any ``nn.Module`` (or a Hydra ``_target_`` dict) mapping uint8 (N, 3, H, W) to (N, d).
        resize: Inception input resize: ``tf1`` (default, torch-fidelity parity), ``bilinear``,
            ``bilinear_antialias`` (torchmetrics >= 1.8 default).
        frame_stride / max_frames_per_clip: which frames of each video enter the statistics.
    """

    weights_path: Optional[str] = None
    extractor: Any = None
    resize: str = "tf1"
    frame_stride: int = 1
    max_frames_per_clip: Optional[int] = None
    batch_size: int = 32
    device: str = "cpu"

    name = "fid"
    level = "set"

    def __post_init__(self):
        self.columns = {"fid": "min"}
        self._module = None

    def setup(self) -> None:
        from vexpress.metrics.fid import FIDInceptionV3

        ext = self.extractor
        if isinstance(ext, dict) or (ext is not None and type(ext).__name__ == "DictConfig"):
            from hydra.utils import instantiate

            ext = instantiate(ext)
        if ext is None:
            try:
                ext = FIDInceptionV3(self.weights_path, resize=self.resize) if self.weights_path else None
            except VExpressError as err:
                raise MetricUnavailable(_weights_note("FID", err)) from err
            if ext is None:
                raise MetricUnavailable(
                    "FID skipped: no feature extractor; set metrics.fid.weights_path to a local "
                    "weights-inception-2015-12-05-6726825d.pth (torch-fidelity v0.2.0 release) or "
                    "metrics.fid.extractor")
        self._module = ext.eval().to(self.device)
        for p in self._module.parameters():
            p.requires_grad_(False)

    def config(self) -> Dict[str, Any]:
        out = super().config()
        out.pop("device", None)
        out.pop("batch_size", None)
        if self._module is not None:
            out["extractor"] = type(self._module).__name__
            h = hashlib.sha256()
            for k, v in sorted(self._module.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
            out["extractor_params"] = h.hexdigest()[:16]
        return out

    def protocol(self) -> Dict[str, Any]:
        from vexpress.metrics.fid import fid_protocol

        p = fid_protocol(self._module) if self._module is not None else {}
        p.update({"frames": "every frame" if self.frame_stride == 1 else f"every {self.frame_stride}th frame",
                  "max_frames_per_clip": self.max_frames_per_clip, "region": "full frame",
                  "real_set": "ground-truth frames, same selection", "implementation": "torchmetrics "
                  "FrechetInceptionDistance on features cached per video"})
        return p

    def weight_files(self):
        return _weight_info(self.weights_path, "FID Inception") if self.extractor is None else []

    @torch.no_grad()
    def features(self, video: Video) -> np.ndarray:
        frames = video.frames()[:: max(1, self.frame_stride)]
        if self.max_frames_per_clip:
            frames = frames[: int(self.max_frames_per_clip)]
        out = []
        for i in range(0, len(frames), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(frames[i: i + self.batch_size])).permute(0, 3, 1, 2)
            out.append(self._module(x.to(self.device)).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 0))

    def compute(self, real, fake) -> Dict[str, float]:
        from vexpress.metrics.fid import build_fid

        real = [r for r in real if len(r)]
        fake = [f for f in fake if len(f)]
        if not real or not fake:
            raise MetricUnavailable("FID not computed: no ground-truth or no generated frames")
        r, f = np.concatenate(real), np.concatenate(fake)
        metric = build_fid(extractor=_Passthrough(r.shape[1]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric.update(torch.from_numpy(r), real=True)
            metric.update(torch.from_numpy(f), real=False)
            try:
                value = float(metric.compute())
            except RuntimeError as err:
                raise MetricUnavailable(f"FID not computed: {err}") from err
        return {"fid": value, "fid_n_real": int(len(r)), "fid_n_fake": int(len(f))}


@dataclass
class FVDSpec(MetricSpec):
    """FVD (StyleGAN-V I3D): clips of ``num_frames`` consecutive frames every ``stride`` frames from frame 0."""

    weights_path: Optional[str] = None
    preprocess: str = "stylegan_v"
    num_frames: int = 16
    stride: int = 16
    max_clips_per_video: Optional[int] = None
    unbiased: bool = False
    batch_size: int = 4
    device: str = "cpu"

    name = "fvd"
    level = "set"

    def __post_init__(self):
        self.columns = {"fvd": "min"}
        self._features = None

    def setup(self) -> None:
        from vexpress.metrics.fvd import I3DFeatures, load_i3d_detector

        if not self.weights_path:
            raise MetricUnavailable("FVD skipped: no I3D detector; set metrics.fvd.weights_path to a local "
                                    "i3d_torchscript.pt (StyleGAN-V's TorchScript I3D)")
        try:
            det = load_i3d_detector(self.weights_path)
        except VExpressError as err:
            raise MetricUnavailable(_weights_note("FVD", err)) from err
        self._features = I3DFeatures(det, preprocess=self.preprocess, batch_size=self.batch_size).to(self.device)

    def config(self):
        out = super().config()
        out.pop("device", None)
        out.pop("batch_size", None)
        if self.weights_path and Path(self.weights_path).is_file():
            from vexpress.metrics.weights import sha256_file

            out["weights_sha256"] = sha256_file(self.weights_path)[:16]
        return out

    def protocol(self):
        return {"detector": "I3D TorchScript (StyleGAN-V), 400-d logits", "clip_frames": self.num_frames,
                "clip_stride": self.stride, "clip_start": 0, "max_clips_per_video": self.max_clips_per_video,
                "preprocess": self.preprocess,
                "resize": {"stylegan_v": "inside the detector (rescale=True, resize=True)",
                           "tf1": "TF1 bilinear to 224x224", "bilinear": "torch bilinear to 224x224"}[self.preprocess],
                "value_range_seen_by_i3d": "[-1, 1]",
                "covariance": "unbiased (n-1)" if self.unbiased else "biased (n), StyleGAN-V",
                "region": "full frame", "short_videos": f"fewer than {self.num_frames} frames: no clip"}

    def weight_files(self):
        return _weight_info(self.weights_path, "FVD I3D")

    @torch.no_grad()
    def features(self, video: Video) -> np.ndarray:
        from vexpress.metrics.fvd import sample_clips

        frames = torch.from_numpy(np.ascontiguousarray(video.frames())).permute(3, 0, 1, 2)  # (C, T, H, W)
        clips = sample_clips(frames, self.num_frames, self.stride, self.max_clips_per_video)
        if clips.shape[0] == 0:
            return np.zeros((0, 400))
        return self._features(clips).numpy()

    def compute(self, real, fake):
        from vexpress.metrics.fvd import FrechetVideoDistance

        real = [r for r in real if len(r)]
        fake = [f for f in fake if len(f)]
        if not real or not fake:
            raise MetricUnavailable(f"FVD not computed: no clip of {self.num_frames} frames on one side")
        m = FrechetVideoDistance(self._features, unbiased=self.unbiased)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.update_features(torch.from_numpy(np.concatenate(real)), real=True)
            m.update_features(torch.from_numpy(np.concatenate(fake)), real=False)
            try:
                value = float(m.compute())
            except RuntimeError as err:
                raise MetricUnavailable(f"FVD not computed: {err}") from err
        return {"fvd": value, "fvd_n_real": int(sum(len(r) for r in real)),
                "fvd_n_fake": int(sum(len(f) for f in fake))}


# ---------------------------------------------------------------------------------------------------------------
# Per-clip: SyncNet, KpsDis, LMD, lip-sync proxy, identity, synthetic ground truth


@dataclass
class SyncNetSpec(MetricSpec):
    """LSE-D / LSE-C / AV offset with syncnet_v2 on mediapipe-box crops at 25 fps."""

    weights_path: Optional[str] = None
    vshift: int = 15
    crop_scale: float = 0.40
    min_windows: int = 1
    batch_size: int = 20
    device: str = "cpu"

    name = "syncnet"

    def __post_init__(self):
        self.columns = {"lse_d": "min", "lse_c": "max", "av_offset": "info", "sync_windows": "info"}
        self._net = None

    def setup(self):
        from vexpress.metrics.syncnet import load_syncnet

        if not self.weights_path:
            raise MetricUnavailable("SyncNet LSE-C/D skipped: set metrics.syncnet.weights_path to a local "
                                    "syncnet_v2.model (joonson/syncnet_python)")
        try:
            self._net = load_syncnet(self.weights_path).to(self.device)
        except VExpressError as err:
            raise MetricUnavailable(_weights_note("SyncNet", err)) from err

    def config(self):
        out = super().config()
        out.pop("device", None)
        out.pop("batch_size", None)
        return out

    def protocol(self):
        from vexpress.metrics.syncnet import syncnet_protocol

        p = syncnet_protocol(self.vshift, f"mediapipe-box crop (syncnet_python rule, scale {self.crop_scale})")
        p["min_windows"] = self.min_windows
        return p

    def weight_files(self):
        return _weight_info(self.weights_path, "SyncNet")

    def clip(self, item, role):
        from vexpress.metrics.syncnet import interpolate_boxes, resample_indices, syncnet_face_crops, syncnet_scores

        empty = {k: NAN for k in self.columns}
        audio = item.audio()
        if audio is None:
            item.note(f"{item.clip_id}: no audio, SyncNet not scored")
            return empty
        video = item.video(role)
        track = item.track(role)
        idx = resample_indices(video.num_frames, video.fps)
        try:
            boxes = interpolate_boxes(track.bbox[idx], track.has_box[idx])
            crops = syncnet_face_crops(video.frames()[idx], boxes, self.crop_scale)
            scores = syncnet_scores(self._net, crops, audio, self.vshift, self.batch_size,
                                    min_windows=self.min_windows)
        except InputError as err:
            item.note(f"{item.clip_id} ({role}): SyncNet not scored: {err}")
            return empty
        return scores.as_row()


@dataclass
class KpsDisSpec(MetricSpec):
    """KpsDis: mediapipe V-Kps of the video vs the driving keypoints (px at 512x512)."""

    name = "kps"

    def __post_init__(self):
        self.columns = {"kps_dis": "min", "kps_missing": "info"}

    def protocol(self):
        return {"detector": "mediapipe 0.10.21 face mesh -> V-Kps (vexpress.preprocessing.face, not SCRFD)",
                "points": "left-in-image eye, right-in-image eye, nose", "units": "pixels at 512x512",
                "target": "driving keypoints when given, else keypoints detected on the ground truth",
                "time_alignment": "nearest frame in time", "missing_faces": "excluded and counted"}

    def clip(self, item, role):
        from vexpress.metrics.landmarks import kps_distance

        target = item.driving_kps()
        if target is None:
            return {"kps_dis": NAN, "kps_missing": NAN}
        video = item.video(role)
        track = item.track(role)
        pred = time_align(track.kps, video.fps, target["fps"], len(target["kps"]))
        out = kps_distance(pred, target["kps"], pred_size=video.size, target_size=target["size"])
        return {"kps_dis": out["kps_dis"], "kps_missing": out["kps_missing"]}


@dataclass
class LMDSpec(MetricSpec):
    """Mouth landmark distance to the ground truth (raw px at 512x512, and pose-aligned % of eye distance)."""

    name = "lmd"

    def __post_init__(self):
        self.columns = {"lmd": "min", "lmd_aligned": "min"}

    def protocol(self):
        return {"landmarks": "mediapipe FACEMESH_LIPS (40 points)", "lmd_units": "pixels at 512x512",
                "lmd_aligned": "similarity-aligned on stable points, percent of inter-ocular distance",
                "time_alignment": "generated frames mapped to ground-truth frames by time"}

    def clip(self, item, role):
        from vexpress.metrics.landmarks import landmark_distance

        if item.pair.gt is None:
            return {"lmd": NAN, "lmd_aligned": NAN}
        gt_track = item.track("gt")
        video = item.video(role)
        track = item.track(role)
        pred = time_align(track.landmarks, video.fps, item.pair.gt.fps, gt_track.num_frames)
        out = landmark_distance(pred, gt_track.landmarks, pred_size=video.size, target_size=gt_track.size)
        return {"lmd": out["lmd"], "lmd_aligned": out["lmd_aligned"]}


@dataclass
class LipSyncSpec(MetricSpec):
    """Weight-free landmark lip-sync score (mouth opening vs audio envelope)."""

    max_lag: int = 15
    use_diff: bool = False

    name = "lipsync"

    def __post_init__(self):
        self.columns = {"lip_r0": "max", "lip_r_best": "max", "lip_lag": "info", "lip_conf": "max"}

    def protocol(self):
        return {"opening": "|p13 - p14| / |p33 - p263| (mediapipe mesh)", "audio": "log RMS, 40 ms windows",
                "rate": "25 fps (linear resampling)", "lags": f"-{self.max_lag}..{self.max_lag} frames",
                "first_differences": self.use_diff, "lag_sign": "positive: audio leads video",
                "note": "project-defined proxy, not comparable with LSE"}

    def clip(self, item, role):
        from vexpress.metrics.landmarks import lipsync_score

        audio = item.audio()
        if audio is None:
            return {k: NAN for k in self.columns}
        video = item.video(role)
        out = lipsync_score(item.track(role).landmarks, audio, video.fps, max_lag=self.max_lag,
                            use_diff=self.use_diff)
        return {k: out[k] for k in self.columns}


@dataclass
class IdentitySpec(MetricSpec):
    """Identity vs the reference image: ArcFace cosine when ``arcface_path`` is set, and the landmark proxy."""

    arcface_path: Optional[str] = None
    frame_stride: int = 5
    batch_size: int = 32
    device: str = "cpu"

    name = "identity"

    def __post_init__(self):
        self.columns = {"id_proxy_shape_err": "min"}
        self._embedder = None
        self._note = None

    def setup(self):
        from vexpress.metrics.identity import ArcFaceEmbedder

        if self.arcface_path:
            try:
                self._embedder = ArcFaceEmbedder(self.arcface_path, self.batch_size, self.device)
                self.columns = {"face_sim": "max", "id_proxy_shape_err": "min"}
            except VExpressError as err:
                self._note = f"ArcFace identity skipped (landmark proxy only): {err}"

    def config(self):
        out = super().config()
        out.pop("device", None)
        out.pop("batch_size", None)
        return out

    def protocol(self):
        p = {"id_proxy_shape_err": "PROXY: landmark-geometry residual after similarity alignment to the reference "
                                   "image, % of inter-ocular distance (lower is better, not an embedding metric)",
             "frames": f"every {self.frame_stride}th frame", "reference": "reference image (else GT frame 0)"}
        if self._embedder is not None:
            p["face_sim"] = ("ArcFace-compatible TorchScript, cosine to the reference; mediapipe 5-point similarity "
                             "alignment to the 112x112 ArcFace template; delta_face_sim = |gen - gt| per clip")
        return p

    def weight_files(self):
        return _weight_info(self.arcface_path, "ArcFace") if self._embedder is not None else []

    def clip(self, item, role):
        from vexpress.metrics.identity import face_similarity, identity_shape_error

        out = {k: NAN for k in self.columns}
        ref_lm = item.reference_landmarks()
        if ref_lm is None:
            item.note(f"{item.clip_id}: no face mesh on the reference image, identity not scored")
            return out
        step = max(1, self.frame_stride)
        lms = item.track(role).landmarks[::step]
        out["id_proxy_shape_err"] = identity_shape_error(lms, ref_lm)["id_proxy_shape_err"]
        if self._embedder is not None:
            frames = item.video(role).frames()[::step]
            out["face_sim"] = face_similarity(self._embedder, frames, lms, item.reference_image(), ref_lm)["face_sim"]
        return out


@dataclass
class SyntheticSpec(MetricSpec):
    """Exact ground-truth errors on the synthetic benchmark (clips whose record carries the synthetic identity).

    - ``mouth_err``: mean |measured - true| mouth opening (renderer units, [0, 1] range) against the clip's own
      ground truth; with shuffled audio this grows if the model follows the audio (the control).
    - ``mouth_err_vs_audio``: the same against the mouth implied by the audio actually used (shuffled control).
    - ``pose_err``: measured V-Kps vs the driving (true) keypoints, px at the record's frame size.
    - ``identity_err``: RMS colour difference of face regions vs the ground truth's first frame ([0, 1] scale).
    """

    fit_pose: bool = True
    frame_stride: int = 1
    max_frames: Optional[int] = None

    name = "synthetic"

    def __post_init__(self):
        self.columns = {"mouth_err": "min", "mouth_corr": "max", "mouth_err_vs_audio": "min", "pose_err": "min",
                        "identity_err": "min"}

    def protocol(self):
        return {"measurement": "vexpress.synthetic.measure (analysis by synthesis)", "fit_pose": self.fit_pose,
                "frames": f"every {self.frame_stride}th frame, at most {self.max_frames}",
                "mouth_units": "renderer opening units (GT range [0, 1])", "pose_units": "px at the record size",
                "identity": "appearance descriptor distance to ground-truth frame 0"}

    def clip(self, item, role):
        out = {k: NAN for k in self.columns}
        rec = item.pair.record
        if rec is None or "synthetic" not in getattr(rec, "extra", {}):
            return out
        from vexpress.synthetic.measure import appearance_descriptor, appearance_distance, measure_clip, scale_pose

        frames = item.video(role).frames()
        n = min(len(frames), int(rec.num_frames))
        idx = np.arange(0, n, max(1, self.frame_stride))
        if self.max_frames:
            idx = idx[: int(self.max_frames)]
        if frames.shape[1] != frames.shape[2]:
            item.note(f"{item.clip_id} ({role}): synthetic measurement needs square frames")
            return out
        m = measure_clip(frames[idx], rec, idx, fit=self.fit_pose)
        op, gt_op = m["mouth"][:, 0].astype(np.float64), m["gt_mouth"][:, 0].astype(np.float64)
        out["mouth_err"] = float(np.mean(np.abs(op - gt_op)))
        out["mouth_corr"] = float(np.corrcoef(op, gt_op)[0, 1]) if op.std() > 1e-6 and gt_op.std() > 1e-6 else NAN
        src = item.pair.audio_record
        if src is not None and "synthetic" in getattr(src, "extra", {}):
            src_op = src.gt_mouth[:, 0].numpy().astype(np.float64)
            ok = idx[idx < len(src_op)]
            out["mouth_err_vs_audio"] = float(np.mean(np.abs(op[: len(ok)] - src_op[ok]))) if len(ok) else NAN
        else:
            out["mouth_err_vs_audio"] = out["mouth_err"]
        factor = float(rec.height) / float(frames.shape[1])
        out["pose_err"] = float(np.linalg.norm(m["kps"] - m["gt_kps"], axis=-1).mean() * factor)
        gt_frame0 = item.pair.gt.frames()[0] if item.pair.gt is not None else None
        if gt_frame0 is not None:
            ref_app = appearance_descriptor(gt_frame0, scale_pose(rec.gt_pose[0].numpy(),
                                                                  gt_frame0.shape[0] / float(rec.height)))
            out["identity_err"] = float(np.nanmean([appearance_distance(a, ref_app) for a in m["appearance"]]))
        return out


SPEC_CLASSES = {cls.name: cls for cls in (FIDSpec, FVDSpec, SyncNetSpec, KpsDisSpec, LMDSpec, LipSyncSpec,
                                          IdentitySpec, SyntheticSpec)}


def build_specs(metrics: Any) -> List[MetricSpec]:
    """Specs from a list of :class:`MetricSpec`, or a mapping name -> spec / config dict (``_target_`` optional;
    ``enabled: false`` drops one)."""
    if metrics is None:
        return []
    if isinstance(metrics, MetricSpec):
        return [metrics]
    if isinstance(metrics, (list, tuple)):
        items = [(getattr(m, "name", str(i)), m) for i, m in enumerate(metrics)]
    else:
        items = list(metrics.items())
    out = []
    for key, m in items:
        if isinstance(m, MetricSpec):
            out.append(m)
            continue
        if m is None:
            continue
        cfg = dict(m)
        if not cfg.pop("enabled", True):
            continue
        target = cfg.pop("_target_", None)
        if target is not None:
            from hydra.utils import get_class

            cls = get_class(target)
        else:
            if key not in SPEC_CLASSES:
                raise InputError(f"unknown metric {key!r}; known: {', '.join(sorted(SPEC_CLASSES))}")
            cls = SPEC_CLASSES[key]
        try:
            out.append(cls(**cfg))
        except TypeError as err:
            raise InputError(f"bad options for metric {key}: {err}") from err
    return out


def finite_or_nan(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return NAN
    return f if math.isfinite(f) else NAN


__all__ = ["MetricSpec", "MetricUnavailable", "ClipItem", "FIDSpec", "FVDSpec", "SyncNetSpec", "KpsDisSpec",
           "LMDSpec", "LipSyncSpec", "IdentitySpec", "SyntheticSpec", "build_specs", "SPEC_CLASSES"]
