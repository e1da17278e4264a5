"""Fréchet Video Distance with the StyleGAN-V convention, as a torchmetrics ``Metric``.

Detector: the TorchScript I3D of StyleGAN-V (a port of tf.hub ``i3d-kinetics-400/1``), loaded from a local file
and called as ``detector(x, rescale=..., resize=..., return_features=True)`` on ``(N, 3, T, H, W)`` RGB clips;
it returns the 400-d pre-softmax logits averaged over time.

Preprocessing modes (part of the protocol, written into every report):

- ``"stylegan_v"`` (default): exactly StyleGAN-V's ``compute_fvd``: uint8 clips go to the detector with
  ``rescale=True, resize=True`` (the detector maps 0..255 to [-1, 1] and resizes to 224x224 itself).
- ``"tf1"``: the original TF FVD preprocessing done here: TF1 bilinear resize of every frame to 224x224, then
  ``x / 127.5 - 1``; the detector is called with ``rescale=False, resize=False``.
- ``"bilinear"``: like ``"tf1"`` with ``F.interpolate(bilinear, align_corners=False, antialias=False)``.

Statistics: float64 ``sum``, ``sum x x^T`` and ``n`` per side (``dist_reduce_fx="sum"``); covariance divided by
``n`` like StyleGAN-V's ``FeatureStats`` (``unbiased=True`` switches to ``n - 1``). The detector is not a child
module, so it never ends up in a checkpoint's ``state_dict``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Union

import torch
from torch import Tensor
from torchmetrics import Metric

from vexpress.errors import ShapeError, WeightsError
from vexpress.metrics.frechet import frechet_from_sums
from vexpress.metrics.resize import resize_images, to_uint8_range
from vexpress.metrics.weights import WEIGHT_SOURCES, require_file

FVD_PREPROCESS = ("stylegan_v", "tf1", "bilinear")
I3D_SIZE = 224
I3D_MIN_FRAMES = 10


def load_i3d_detector(path: Union[str, os.PathLike], key: str = "metrics.fvd.weights_path") -> torch.jit.ScriptModule:
    """Load the TorchScript I3D from a local file on CPU, in eval mode (never downloads)."""
    p = require_file(path, "FVD I3D", key, WEIGHT_SOURCES["fvd"])
    try:
        detector = torch.jit.load(str(p), map_location="cpu")
    except Exception as err:  # noqa: BLE001 - any parse error is a user error about this file
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise WeightsError(f"cannot load the I3D TorchScript file {p}: {first} (expected i3d_torchscript.pt)") from err
    return detector.eval()


class I3DFeatures:
    """Callable turning ``(N, 3, T, H, W)`` clips into ``(N, 400)`` float64 I3D features.

    Args:
        detector: a TorchScript/nn.Module with the StyleGAN-V call signature, or a path to ``i3d_torchscript.pt``.
        preprocess: one of :data:`FVD_PREPROCESS`.
        value_range: range of float inputs (uint8 inputs are always 0..255).
        num_features: expected feature size (400 for I3D).
    """

    def __init__(
        self,
        detector: Union[str, os.PathLike, Callable[..., Tensor]],
        preprocess: str = "stylegan_v",
        value_range: tuple = (0.0, 1.0),
        num_features: int = 400,
        batch_size: int = 8,
    ):
        if preprocess not in FVD_PREPROCESS:
            raise ValueError(f"unknown FVD preprocess {preprocess!r}; use one of {FVD_PREPROCESS}")
        if isinstance(detector, (str, os.PathLike)):
            detector = load_i3d_detector(detector)
        if isinstance(detector, torch.nn.Module):
            detector.eval()
            for param in detector.parameters():
                param.requires_grad_(False)
        self.detector = detector
        self.preprocess = preprocess
        self.value_range = tuple(float(v) for v in value_range)
        self.num_features = int(num_features)
        self.batch_size = int(batch_size)

    def to(self, device: torch.device | str) -> "I3DFeatures":
        if isinstance(self.detector, torch.nn.Module):
            self.detector.to(device)
        return self

    def _device(self) -> Optional[torch.device]:
        if isinstance(self.detector, torch.nn.Module):
            for p in self.detector.parameters():
                return p.device
        return None

    def _prepare(self, clips: Tensor) -> tuple[Tensor, Dict[str, bool]]:
        if self.preprocess == "stylegan_v":
            x = clips if clips.dtype == torch.uint8 else to_uint8_range(clips, self.value_range).to(torch.uint8)
            return x, dict(rescale=True, resize=True, return_features=True)
        n, c, t, h, w = clips.shape
        x = to_uint8_range(clips, self.value_range)  # float 0..255
        frames = x.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)
        mode = "tf1" if self.preprocess == "tf1" else "bilinear"
        frames = resize_images(frames, (I3D_SIZE, I3D_SIZE), mode)
        x = frames.reshape(n, t, c, I3D_SIZE, I3D_SIZE).permute(0, 2, 1, 3, 4) / 127.5 - 1.0
        return x.contiguous(), dict(rescale=False, resize=False, return_features=True)

    @torch.no_grad()
    def __call__(self, clips: Tensor) -> Tensor:
        if clips.ndim != 5 or clips.shape[1] not in (1, 3):
            raise ShapeError(f"FVD expects clips (N, 3, T, H, W); got {tuple(clips.shape)}")
        if clips.shape[1] == 1:
            clips = clips.repeat(1, 3, 1, 1, 1)
        if clips.shape[2] < I3D_MIN_FRAMES:
            raise ShapeError(f"FVD clips need at least {I3D_MIN_FRAMES} frames for I3D; got {clips.shape[2]}")
        device = self._device()
        out = []
        for start in range(0, clips.shape[0], self.batch_size):
            chunk = clips[start : start + self.batch_size]
            if device is not None:
                chunk = chunk.to(device)
            x, kwargs = self._prepare(chunk)
            feats = self.detector(x, **kwargs)
            if feats.ndim == 1:
                feats = feats.unsqueeze(0)
            if feats.ndim != 2 or feats.shape != (chunk.shape[0], self.num_features):
                raise ShapeError(
                    f"the FVD detector returned {tuple(feats.shape)}, expected ({chunk.shape[0]}, {self.num_features});"
                    " feed 224x224 frames when resize=False or check the detector file"
                )
            out.append(feats.double().cpu())
        return torch.cat(out)


def sample_clips(frames: Tensor, num_frames: int = 16, stride: int = 16, max_clips: Optional[int] = None) -> Tensor:
    """Cut a video ``(C, T, H, W)`` into clips ``(N, C, num_frames, H, W)`` starting at 0, every ``stride`` frames.

    Videos shorter than ``num_frames`` give no clip (StyleGAN-V discards short videos).
    """
    t = frames.shape[1]
    starts = list(range(0, t - num_frames + 1, max(1, stride)))
    if max_clips is not None:
        starts = starts[: int(max_clips)]
    if not starts:
        return frames.new_zeros((0, frames.shape[0], num_frames, *frames.shape[2:]))
    return torch.stack([frames[:, s : s + num_frames] for s in starts])


class FrechetVideoDistance(Metric):
    """FVD between real and generated clips with streaming float64 statistics.

    Args:
        detector: path to ``i3d_torchscript.pt``, a loaded detector, or an :class:`I3DFeatures`.
        preprocess: ``"stylegan_v"`` (default), ``"tf1"`` or ``"bilinear"`` (see module docstring).
        value_range: range of float clips (uint8 clips are 0..255).
        num_features: detector output size (400).
        reset_real_features: if False, ``reset()`` keeps the real statistics (cache them across evaluations).
        unbiased: covariance with ``n - 1`` instead of StyleGAN-V's ``n``.

    ``update(clips (N, 3, T, H, W), real: bool)``; ``update_features(features (N, d), real)`` for precomputed ones.
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    def __init__(
        self,
        detector: Union[str, os.PathLike, Callable[..., Tensor], I3DFeatures],
        preprocess: str = "stylegan_v",
        value_range: tuple = (0.0, 1.0),
        num_features: int = 400,
        reset_real_features: bool = True,
        unbiased: bool = False,
        batch_size: int = 8,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        features = detector if isinstance(detector, I3DFeatures) else I3DFeatures(
            detector, preprocess=preprocess, value_range=value_range, num_features=num_features, batch_size=batch_size
        )
        # Not registered as a child module: the detector stays out of state_dict() and checkpoints.
        object.__setattr__(self, "_features", features)
        self.num_features = features.num_features
        self.reset_real_features = reset_real_features
        self.unbiased = unbiased
        d = self.num_features
        for side in ("real", "fake"):
            self.add_state(f"{side}_features_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_features_cov_sum", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_features_num_samples", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @property
    def features(self) -> I3DFeatures:
        return self._features

    def _apply(self, fn, *args, **kwargs):  # follow .to()/.cuda() with the hidden detector (device only)
        out = super()._apply(fn, *args, **kwargs)
        self._features.to(self.device)
        return out

    def update(self, clips: Tensor, real: bool) -> None:  # type: ignore[override]
        self.update_features(self._features(clips), real)

    def update_features(self, features: Tensor, real: bool) -> None:
        """Add precomputed ``(N, d)`` features to one side."""
        features = features.detach().to(device=self.real_features_sum.device, dtype=torch.float64)
        if features.ndim == 1:
            features = features.unsqueeze(0)
        if features.shape[-1] != self.num_features:
            raise ShapeError(f"FVD features have {features.shape[-1]} dims, expected {self.num_features}")
        side = "real" if real else "fake"
        setattr(self, f"{side}_features_sum", getattr(self, f"{side}_features_sum") + features.sum(0))
        setattr(self, f"{side}_features_cov_sum", getattr(self, f"{side}_features_cov_sum") + features.T @ features)
        setattr(self, f"{side}_features_num_samples", getattr(self, f"{side}_features_num_samples") + features.shape[0])

    def compute(self) -> Tensor:
        return frechet_from_sums(
            self.real_features_sum, self.real_features_cov_sum, self.real_features_num_samples,
            self.fake_features_sum, self.fake_features_cov_sum, self.fake_features_num_samples,
            unbiased=self.unbiased, what="FVD",
        ).float()

    def reset(self) -> None:
        if not self.reset_real_features:
            keep = {k: getattr(self, k).clone() for k in self._defaults if k.startswith("real_")}
            super().reset()
            for k, v in keep.items():
                setattr(self, k, v)
        else:
            super().reset()

    def protocol(self) -> Dict[str, Any]:
        f = self._features
        return {
            "detector_call": {"stylegan_v": "rescale=True, resize=True", "tf1": "rescale=False, resize=False",
                              "bilinear": "rescale=False, resize=False"}[f.preprocess],
            "preprocess": f.preprocess,
            "resize": {"stylegan_v": "inside the detector", "tf1": "TF1 bilinear to 224x224",
                       "bilinear": "torch bilinear (no antialias) to 224x224"}[f.preprocess],
            "value_range_seen_by_i3d": "[-1, 1]",
            "features": f.num_features,
            "covariance": "unbiased (n-1)" if self.unbiased else "biased (n), StyleGAN-V FeatureStats",
        }


__all__ = ["FrechetVideoDistance", "I3DFeatures", "load_i3d_detector", "sample_clips", "FVD_PREPROCESS"]
