"""SyncNet lip-sync scores LSE-D / LSE-C (a.k.a. Sync-D / Sync-C), following joonson/syncnet_python.

Protocol (written into every report by :func:`syncnet_protocol`):

- video at 25 fps (other rates are resampled first, nearest-frame like ``ffmpeg -r 25``), audio 16 kHz mono with
  int16 sample values (not [-1, 1]);
- face crops: the syncnet_python crop rule (box side and centre median-filtered over 13 frames, edge-repeating;
  square of side 2.8 s shifted down to include the mouth, grey padding 110, resized to 224x224) applied to **our
  mediapipe face boxes** instead of S3FD tracks, so values are labelled "mediapipe-box crop";
- frames BGR, float 0..255 unnormalised; MFCC as ``python_speech_features.mfcc`` defaults;
- windows of 5 frames / 20 MFCC columns, one per video frame up to ``min(frames, samples // 640) - 5``;
- distances between the raw 1024-d embeddings for audio shifts of -15..15 frames, averaged over windows;
  LSE-D = the minimum of that curve, LSE-C = its median minus the minimum, AV offset = 15 - argmin (positive:
  audio leads video).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from vexpress.errors import InputError, ShapeError, WeightsError
from vexpress.metrics.mfcc import mfcc, to_int16_scale
from vexpress.metrics.weights import WEIGHT_SOURCES, require_file

SYNCNET_FPS = 25
SYNCNET_SR = 16000
SYNCNET_CROP = 224
SAMPLES_PER_FRAME = SYNCNET_SR // SYNCNET_FPS  # 640
MFCC_PER_FRAME = 4  # 100 MFCC frames/s over 25 video frames/s
WINDOW_FRAMES = 5
WINDOW_MFCC = 20


def _conv_bn_relu2d(cin, cout, kernel, padding):
    return [nn.Conv2d(cin, cout, kernel_size=kernel, stride=(1, 1), padding=padding), nn.BatchNorm2d(cout), nn.ReLU()]


def _conv_bn_relu3d(cin, cout, kernel, stride=(1, 1, 1), padding=0):
    return [nn.Conv3d(cin, cout, kernel_size=kernel, stride=stride, padding=padding), nn.BatchNorm3d(cout), nn.ReLU()]


def _fc_head(out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, out_dim))


class SyncNetV2(nn.Module):
    """The ``S`` network of syncnet_python (``syncnet_v2.model``), with the original parameter names.

    ``forward_aud((N, 1, 13, 20) MFCC) -> (N, 1024)``; ``forward_lip((N, 3, 5, 224, 224) BGR 0..255) -> (N, 1024)``.
    Sequential indices match the original (ReLU and pooling layers keep their slots), so a real state dict loads
    strictly.
    """

    def __init__(self, embedding_dim: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu2d(1, 64, 3, 1), nn.MaxPool2d(kernel_size=1, stride=1),
            *_conv_bn_relu2d(64, 192, 3, 1), nn.MaxPool2d(kernel_size=3, stride=(1, 2)),
            *_conv_bn_relu2d(192, 384, 3, 1),
            *_conv_bn_relu2d(384, 256, 3, 1),
            *_conv_bn_relu2d(256, 256, 3, 1), nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv_bn_relu2d(256, 512, (5, 4), 0),
        )
        self.netfcaud = _fc_head(embedding_dim)
        self.netfclip = _fc_head(embedding_dim)
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            *_conv_bn_relu3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_conv_bn_relu3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv_bn_relu3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv_bn_relu3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            *_conv_bn_relu3d(256, 512, (1, 6, 6)),
        )

    def forward_aud(self, x: Tensor) -> Tensor:
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: Tensor) -> Tensor:
        return self.netfclip(self.netcnnlip(x).flatten(1))


# ---------------------------------------------------------------------------------------------------------------
# Safe loading


def _allowed_module_classes() -> list:
    """Exactly the classes a pickled syncnet_python ``S`` module references (for the weights-only unpickler)."""
    return [
        (SyncNetV2, "SyncNetModel.S"),
        nn.Sequential, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
        nn.ReLU, nn.MaxPool2d, nn.MaxPool3d, nn.Linear, set,
    ]


def _strip_prefix(state: Mapping, prefixes=("__S__.", "module.")) -> dict:
    out = {}
    for k, v in state.items():
        for pre in prefixes:
            if k.startswith(pre):
                k = k[len(pre):]
        out[k] = v
    return out


def _read_syncnet_object(path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first_err:
        # A pickled module instead of a state dict: allow exactly the layer classes of ``S`` (no arbitrary code).
        try:
            with torch.serialization.safe_globals(_allowed_module_classes()):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001
            msg = str(first_err).strip().splitlines()[0][:160]
            raise WeightsError(
                f"cannot read SyncNet weights {path} safely ({msg}); convert it once in a trusted session inside a "
                "syncnet_python checkout (load the pickled model, save its state_dict() to syncnet_v2_sd.pth) and set "
                "metrics.syncnet.weights_path to that file"
            ) from err
    except Exception as err:  # noqa: BLE001
        msg = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise WeightsError(f"cannot read SyncNet weights {path}: {msg} (expected syncnet_v2.model)") from err


def load_syncnet(path: Union[str, os.PathLike], key: str = "metrics.syncnet.weights_path") -> SyncNetV2:
    """Load ``syncnet_v2.model`` safely (weights-only) into :class:`SyncNetV2`, eval mode, frozen.

    Accepts a state dict (possibly under ``state_dict`` or with ``__S__.``/``module.`` prefixes) or a pickled
    ``SyncNetModel.S`` module, which is read through a narrow allow-list of its layer classes.
    """
    p = require_file(path, "SyncNet", key, WEIGHT_SOURCES["syncnet"])
    obj = _read_syncnet_object(p)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"SyncNet weights {p} are not a state dict of tensors (expected syncnet_v2.model)")
    state = _strip_prefix(obj)
    net = SyncNetV2()
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise WeightsError(
            f"SyncNet weights {p} do not match syncnet_v2 ({str(err).splitlines()[-1].strip()[:120]}); use "
            "syncnet_v2.model from syncnet_python"
        ) from err
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(
            f"SyncNet weights {p} do not match syncnet_v2 ({len(missing)} missing, {len(unexpected)} unexpected keys, "
            f"e.g. {(list(missing) + list(unexpected))[:2]}); use syncnet_v2.model from syncnet_python"
        )
    return net.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------
# Frame-rate resampling and face crops


def resample_indices(num_frames: int, src_fps: float, dst_fps: float = SYNCNET_FPS) -> np.ndarray:
    """Source frame index for each output frame when converting ``src_fps`` to ``dst_fps`` (nearest in time).

    Like ``ffmpeg -r``: output frame k shows the input frame nearest to time ``k / dst_fps``; frames are dropped or
    repeated, never blended. The output covers the input duration ``num_frames / src_fps``.
    """
    if num_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    if abs(src_fps - dst_fps) < 1e-6:
        return np.arange(num_frames)
    duration = num_frames / float(src_fps)
    n_out = max(1, int(np.floor(duration * dst_fps + 0.5)))
    idx = np.floor(np.arange(n_out) * (src_fps / dst_fps) + 0.5).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


def interpolate_boxes(boxes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill frames without a face box by linear interpolation (edges: nearest valid box)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if not valid.any():
        raise InputError("no face was found in any frame; SyncNet needs face boxes")
    t = np.arange(len(boxes))
    return np.stack([np.interp(t, t[valid], boxes[valid, j]) for j in range(boxes.shape[1])], axis=1)


def syncnet_face_crops(
    frames_rgb: np.ndarray, boxes: np.ndarray, crop_scale: float = 0.40, smooth: int = 13, size: int = SYNCNET_CROP
) -> np.ndarray:
    """syncnet_python's crop rule on given face boxes.

    Args:
        frames_rgb: ``(T, H, W, 3)`` uint8 RGB frames.
        boxes: ``(T, 4)`` face boxes ``(x1, y1, x2, y2)`` in pixels (gaps already filled).
        crop_scale: the original ``crop_scale`` (0.40).
        smooth: median-filter kernel over time (13). The ends repeat the edge value; syncnet_python's
            ``scipy.signal.medfilt`` pads with zeros instead, which only changes the first/last 6 frames of its
            (>= 100-frame) tracks but would collapse the boxes of short clips.

    Returns:
        ``(T, size, size, 3)`` uint8 **BGR** crops.
    """
    import cv2
    from scipy.ndimage import median_filter

    boxes = np.asarray(boxes, dtype=np.float64)
    if len(boxes) != len(frames_rgb):
        raise ShapeError(f"{len(frames_rgb)} frames but {len(boxes)} face boxes")
    half = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    k = smooth if smooth % 2 == 1 else smooth + 1
    if k > 1:
        half, cy, cx = (median_filter(v, size=k, mode="nearest") for v in (half, cy, cx))
    out = np.empty((len(frames_rgb), size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames_rgb):
        bs = max(float(half[i]), 1.0)
        pad = int(bs * (1 + 2 * crop_scale))
        bgr = np.ascontiguousarray(frame[..., ::-1])
        padded = np.pad(bgr, ((pad, pad), (pad, pad), (0, 0)), mode="constant", constant_values=110)
        my, mx = cy[i] + pad, cx[i] + pad
        face = padded[int(my - bs): int(my + bs * (1 + 2 * crop_scale)),
                      int(mx - bs * (1 + crop_scale)): int(mx + bs * (1 + crop_scale))]
        if face.size == 0:
            raise InputError(f"empty SyncNet face crop at frame {i} (face box {boxes[i].round(1).tolist()})")
        out[i] = cv2.resize(face, (size, size))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Scoring


@dataclass
class SyncScores:
    """Scores of one clip. ``curve[k]`` is the mean distance for audio shift ``k - vshift`` frames."""

    offset: int
    lse_d: float
    lse_c: float
    num_windows: int
    curve: list = field(default_factory=list)

    def as_row(self) -> Dict[str, float]:
        return {"lse_d": self.lse_d, "lse_c": self.lse_c, "av_offset": self.offset, "sync_windows": self.num_windows}

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def shift_distances(video_emb: Tensor, audio_emb: Tensor, vshift: int = 15) -> Tensor:
    """``(N, 2*vshift+1)``: distance of video window i to audio window ``i + k - vshift`` (zero vector if outside).

    ``torch.nn.functional.pairwise_distance`` semantics (``||v - a + 1e-6||``) as in syncnet_python's calc_pdist.
    """
    n = video_emb.shape[0]
    padded = F.pad(audio_emb, (0, 0, vshift, vshift))
    offsets = torch.arange(2 * vshift + 1)
    idx = torch.arange(n)[:, None] + offsets[None, :]
    shifted = padded[idx]  # (N, K, D)
    return F.pairwise_distance(video_emb[:, None, :].expand_as(shifted), shifted)


def scores_from_distances(dists: Tensor, vshift: int = 15) -> SyncScores:
    """Offset, LSE-D and LSE-C from the per-window distance matrix of :func:`shift_distances`."""
    mdist = dists.mean(0)
    minval, minidx = torch.min(mdist, 0)
    conf = torch.median(mdist) - minval
    return SyncScores(
        offset=int(vshift - int(minidx)), lse_d=float(minval), lse_c=float(conf), num_windows=int(dists.shape[0]),
        curve=[float(v) for v in mdist],
    )


def num_sync_windows(num_frames: int, num_samples: int) -> int:
    """Number of 5-frame windows syncnet_python scores: ``min(frames, samples // 640) - 5`` (at least 0)."""
    return max(0, min(num_frames, num_samples // SAMPLES_PER_FRAME) - WINDOW_FRAMES)


@torch.no_grad()
def syncnet_embeddings(model, crops_bgr: Tensor, mfcc_feats: Tensor, num_windows: int, batch_size: int = 20):
    """Embeddings of every window: ``crops_bgr`` (T, 3, 224, 224) float 0..255, ``mfcc_feats`` (13, M)."""
    first = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    device = first.device if first is not None else torch.device("cpu")
    vid, aud = [], []
    for start in range(0, num_windows, batch_size):
        ids = range(start, min(num_windows, start + batch_size))
        v = torch.stack([crops_bgr[i: i + WINDOW_FRAMES].transpose(0, 1) for i in ids])  # (B, 3, 5, H, W)
        a = torch.stack([mfcc_feats[:, MFCC_PER_FRAME * i: MFCC_PER_FRAME * i + WINDOW_MFCC] for i in ids])[:, None]
        vid.append(model.forward_lip(v.to(device)).float().cpu())
        aud.append(model.forward_aud(a.to(device)).float().cpu())
    return torch.cat(vid), torch.cat(aud)


def syncnet_scores(
    model,
    crops_bgr: Union[np.ndarray, Tensor],
    wave: np.ndarray,
    vshift: int = 15,
    batch_size: int = 20,
    wave_is_int16_scale: bool = False,
    min_windows: int = 1,
) -> SyncScores:
    """LSE-D / LSE-C / AV offset of one clip at 25 fps.

    Args:
        model: :class:`SyncNetV2` (or any object with ``forward_lip`` / ``forward_aud``).
        crops_bgr: ``(T, 224, 224, 3)`` uint8 BGR crops (or ``(T, 3, 224, 224)`` float 0..255).
        wave: 16 kHz mono waveform, float in [-1, 1] (converted to int16 values) or already int16-scaled.
        vshift: maximum audio shift searched, in frames (15 in syncnet_python's scripts).
        min_windows: raise :class:`InputError` below this many windows.
    """
    crops = torch.as_tensor(np.asarray(crops_bgr) if not isinstance(crops_bgr, Tensor) else crops_bgr)
    if crops.ndim != 4:
        raise ShapeError(f"SyncNet crops must be (T, 224, 224, 3) or (T, 3, 224, 224); got {tuple(crops.shape)}")
    if crops.shape[-1] == 3 and crops.shape[1] != 3:
        crops = crops.permute(0, 3, 1, 2)
    crops = crops.float()
    samples = np.asarray(wave, dtype=np.float64).reshape(-1)
    if not wave_is_int16_scale:
        samples = to_int16_scale(samples)
    n_win = num_sync_windows(crops.shape[0], samples.shape[0])
    if n_win < max(1, min_windows):
        raise InputError(
            f"clip too short for SyncNet: {n_win} windows (frames={crops.shape[0]} at 25 fps, audio "
            f"{samples.shape[0] / SYNCNET_SR:.2f} s); need at least {max(1, min_windows)}"
        )
    feats = torch.from_numpy(mfcc(samples, SYNCNET_SR).T.copy()).float()  # (13, M)
    vid, aud = syncnet_embeddings(model, crops, feats, n_win, batch_size)
    return scores_from_distances(shift_distances(vid, aud, vshift), vshift)


def syncnet_protocol(vshift: int = 15, crop: str = "mediapipe-box crop (syncnet_python rule, scale 0.40)") -> dict:
    return {
        "fps": SYNCNET_FPS, "fps_resampling": "nearest frame in time (ffmpeg -r 25 style)",
        "audio": "16 kHz mono, int16 sample scale", "mfcc": "python_speech_features defaults (13 x 100/s)",
        "crop": crop, "crop_size": SYNCNET_CROP, "color": "BGR 0..255", "window": "5 frames / 20 MFCC",
        "vshift": vshift, "lse_d": "min of mean distance curve", "lse_c": "median - min of the curve",
        "offset_sign": "positive: audio leads video",
    }


class SyncNetScore(Metric):
    """Mean LSE-D / LSE-C over clips (torchmetrics wrapper around :func:`syncnet_scores`).

    ``update(crops_bgr (T, 224, 224, 3) uint8 at 25 fps, wave (S,) 16 kHz float)``; ``compute() -> {"lse_d",
    "lse_c", "clips"}``. The SyncNet itself is not a child module (never in ``state_dict``).
    """

    higher_is_better = None
    is_differentiable = False
    full_state_update = False

    def __init__(self, syncnet: Union[str, os.PathLike, SyncNetV2], vshift: int = 15, batch_size: int = 20,
                 **kwargs: Any):
        super().__init__(**kwargs)
        net = load_syncnet(syncnet) if isinstance(syncnet, (str, os.PathLike)) else syncnet
        object.__setattr__(self, "_syncnet", net)
        self.vshift = vshift
        self.batch_size = batch_size
        self.add_state("lse_d_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("lse_c_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("clips", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, crops_bgr, wave) -> None:  # type: ignore[override]
        s = syncnet_scores(self._syncnet, crops_bgr, wave, self.vshift, self.batch_size)
        self.lse_d_sum += s.lse_d
        self.lse_c_sum += s.lse_c
        self.clips += 1

    def compute(self) -> Dict[str, Tensor]:
        n = self.clips.clamp(min=1).double()
        return {"lse_d": self.lse_d_sum / n, "lse_c": self.lse_c_sum / n, "clips": self.clips}


__all__ = [
    "SyncNetV2", "load_syncnet", "syncnet_scores", "syncnet_face_crops", "resample_indices", "interpolate_boxes",
    "shift_distances", "scores_from_distances", "num_sync_windows", "SyncScores", "SyncNetScore", "syncnet_protocol",
]
