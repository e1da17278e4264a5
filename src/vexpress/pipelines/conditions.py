"""Per-video condition sources that hand the sampling loop one context window at a time, on the device.

What is stored for the whole video is small and independent of the image size:

- audio: the projected audio tokens ``(T, 5, cross_dim)`` (a few kB per frame), computed once in chunks;
- keypoints: the ``(T, 3, 2)`` coordinates. V-Kps images are drawn and encoded by the guider per window, on the
  device, when the loop needs them: the official pipeline instead stores the guider output of every frame on the
  host (``(2, 320, T, 64, 64)``, ~4.8 GB for 31 s) and copies a slice to the GPU per window and step (spec §6).
  Frames with identical keypoints (``fix_face``: all of them) share one guider pass; when the whole video has at
  most ``cache_limit`` distinct keypoint sets, their features are computed once and kept.
"""

from __future__ import annotations

import numpy as np
import torch

from vexpress.audio.windows import audio_windows
from vexpress.errors import ShapeError


class AudioCondition:
    """Projected audio tokens of a whole video, sliced per window.

    Args:
        net: the ``VExpressNet`` (its ``audio_projection`` is used).
        features: ``(N, D)`` audio-encoder features of the whole utterance.
        num_frames: video frames ``T`` (the features are resampled to 2 rows per frame, spec §1.6).
        device, dtype: where the tokens live (the denoiser's device and dtype).
        chunk_frames: frames projected per batch (bounds the projection's working memory).
    """

    def __init__(self, net: torch.nn.Module, features: torch.Tensor, num_frames: int, *,
                 device: torch.device | str, dtype: torch.dtype, chunk_frames: int = 64):
        if features.ndim != 2:
            raise ShapeError(f"audio features must be (N, D), got {tuple(features.shape)}")
        dim = net.config.audio_embedding_dim
        if features.shape[1] != dim:
            raise ShapeError(
                f"audio features have {features.shape[1]} channels but the model's audio projection expects {dim}; "
                "use the audio encoder the model was trained with"
            )
        num_pad = net.config.num_padding_audio_frames
        windows = audio_windows(features.to(device=device, dtype=torch.float32), num_frames, num_pad)
        proj_dtype = next(net.audio_projection.parameters()).dtype
        tokens = []
        with torch.no_grad():
            for start in range(0, num_frames, chunk_frames):
                chunk = windows[start:start + chunk_frames].to(proj_dtype)
                tokens.append(net.encode_audio(chunk[None])[0].to(dtype))
        self.tokens = torch.cat(tokens)  # (T, tokens, cross_dim)
        self.num_frames = num_frames

    def window(self, frames: range) -> torch.Tensor:
        """(1, F, tokens, cross_dim) for the frames of one window."""
        return self.tokens[frames.start:frames.stop][None]


class KpsCondition:
    """V-Kps guider features per window, drawn and encoded on demand.

    Args:
        net: the ``VExpressNet`` (its ``v_kps_guider`` is used).
        kps: ``(T, 3, 2)`` keypoints in output-image pixels ``(x, y)``, rows [eye0, eye1, nose].
        height, width: output image size (the V-Kps images are drawn at this size, as in the official code).
        device, dtype: where the features are produced.
        cache_limit: keep the features of every distinct keypoint set when there are at most this many.
    """

    def __init__(self, net: torch.nn.Module, kps: np.ndarray | torch.Tensor, height: int, width: int, *,
                 device: torch.device | str, dtype: torch.dtype, cache_limit: int = 32):
        kps = kps.detach().cpu().numpy() if isinstance(kps, torch.Tensor) else np.asarray(kps)
        kps = kps.astype(np.float32, copy=False)
        if kps.ndim != 3 or kps.shape[1:] != (3, 2):
            raise ShapeError(f"keypoints must be (T, 3, 2), got {kps.shape}")
        if not np.isfinite(kps).all():
            raise ShapeError("keypoints contain NaN/inf; interpolate missing frames before generation")
        self.net = net
        self.height, self.width = int(height), int(width)
        self.device, self.dtype = torch.device(device), dtype
        self.num_frames = kps.shape[0]
        # distinct keypoint sets (exact float equality) and, per frame, which one it uses
        self.unique, self.index = np.unique(kps.reshape(len(kps), -1), axis=0, return_inverse=True)
        self.index = np.asarray(self.index).reshape(-1)
        self.unique = self.unique.reshape(-1, 3, 2)
        self._cache: torch.Tensor | None = None
        if len(self.unique) <= cache_limit:
            self._cache = self._encode(np.arange(len(self.unique)))

    @property
    def num_distinct(self) -> int:
        return int(len(self.unique))

    #: images drawn and encoded per guider call: the guider's activations are image-sized (16 channels at full
    #: resolution, ~17 MB per 512x512 image in fp32), so they are bounded by this many images at a time
    encode_chunk = 4

    def _encode(self, ids: np.ndarray) -> torch.Tensor:
        """Guider features (C0, n, h, w) of distinct keypoint sets ``ids``."""
        from vexpress.kps.draw import draw_kps_image

        guider_dtype = next(self.net.v_kps_guider.parameters()).dtype
        parts = []
        for start in range(0, len(ids), self.encode_chunk):
            chunk = ids[start:start + self.encode_chunk]
            images = np.stack([draw_kps_image(self.height, self.width, self.unique[i]) for i in chunk])  # (n,H,W,3)
            x = torch.from_numpy(images).to(self.device, non_blocking=True)
            x = x.permute(3, 0, 1, 2).to(torch.float32).div_(255.0)  # exactly uint8/255, as the official processor
            with torch.no_grad():
                parts.append(self.net.encode_kps(x[None].to(guider_dtype))[0].to(self.dtype))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def window(self, frames: range) -> torch.Tensor:
        """(1, C0, F, h, w) guider features of one window."""
        idx = self.index[frames.start:frames.stop]
        if self._cache is not None:
            ids = torch.from_numpy(idx).to(self._cache.device)
            return self._cache.index_select(1, ids)[None]
        ids, inverse = np.unique(idx, return_inverse=True)
        feats = self._encode(ids)
        order = torch.from_numpy(np.asarray(inverse).reshape(-1)).to(feats.device)
        return feats.index_select(1, order)[None]
