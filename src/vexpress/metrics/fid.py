"""FID through torchmetrics' ``FrechetInceptionDistance`` with a local, safely loaded feature extractor.

torchmetrics' built-in ``feature=2048`` path needs torch-fidelity and downloads its weights (or reads a local file
unpickling everything it contains). We never do either: the metric always receives a module.

- :class:`FIDInceptionV3` is the TF-2015 Inception-v3 used by TTUR / torch-fidelity (same layer names, so the
  torch-fidelity release file ``weights-inception-2015-12-05-6726825d.pth`` loads strictly), read with
  ``weights_only=True``. It takes uint8 ``(N, 3, H, W)`` RGB, resizes to 299x299, scales with ``(x - 128) / 128``
  and returns the 2048-d pool features.
- Any other ``nn.Module`` from config works too; it receives the uint8 frames unchanged.

**Resize / antialias setting.** Default ``resize="tf1"``: TF1 bilinear without antialias, which is what
torch-fidelity does and what torchmetrics does with ``antialias=False``; our numbers are then comparable with
torch-fidelity / TTUR-style FID. torchmetrics >= 1.8 defaults to ``antialias=True`` (``resize=
"bilinear_antialias"`` here), which gives different values, especially for 512x512 frames downsampled to 299.

The extractor is kept out of the metric's module tree (:class:`FrechetInceptionDistanceLocal`), so putting the
metric on a LightningModule never stores 95 MB of Inception weights in a checkpoint.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vexpress.errors import ShapeError, WeightsError
from vexpress.metrics.resize import resize_images
from vexpress.metrics.weights import WEIGHT_SOURCES, require_file
from vexpress.utils.io import load_tensors

INCEPTION_SIZE = 299


class _ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm(eps=1e-3) + ReLU, the TF Inception unit."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _chain(x: Tensor, *units: nn.Module) -> Tensor:
    for unit in units:
        x = unit(x)
    return x


def _avg3(x: Tensor) -> Tensor:
    # TF's average pool ignores the zero padding in the count.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _Mixed35(nn.Module):
    """35x35 block (Mixed_5b/5c/5d)."""

    def __init__(self, cin: int, pool_ch: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1 = _ConvBN(cin, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch1x1(x),
            _chain(x, self.branch5x5_1, self.branch5x5_2),
            _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            self.branch_pool(_avg3(x)),
        ], 1)


class _Reduce35(nn.Module):
    """35 -> 17 reduction (Mixed_6a)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch3x3(x),
            _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _Mixed17(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b..6e)."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch1x1(x),
            _chain(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
            _chain(x, self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                   self.branch7x7dbl_5),
            self.branch_pool(_avg3(x)),
        ], 1)


class _Reduce17(nn.Module):
    """17 -> 8 reduction (Mixed_7a)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _ConvBN(cin, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            _chain(x, self.branch3x3_1, self.branch3x3_2),
            _chain(x, self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _Mixed8(nn.Module):
    """8x8 block with split 1x3 / 3x1 heads (Mixed_7b uses an average pool, Mixed_7c a max pool as in TF)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_1(x)
        b = _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),
            self.branch_pool(pooled),
        ], 1)


class FIDInceptionV3(nn.Module):
    """TF-2015 Inception-v3 pool3 (2048-d) feature extractor for FID, with torch-fidelity's parameter names.

    Args:
        weights_path: local ``weights-inception-2015-12-05-6726825d.pth`` (or a safetensors copy). ``None`` keeps
            the random initialisation (tests only).
        resize: ``"tf1"`` (default, torch-fidelity / TF parity), ``"bilinear"`` or ``"bilinear_antialias"``
            (torchmetrics >= 1.8 default).

    ``forward(imgs uint8 (N, 3, H, W) RGB) -> (N, 2048)`` float32.
    """

    num_features = 2048

    def __init__(self, weights_path: Optional[Union[str, os.PathLike]] = None, resize: str = "tf1"):
        super().__init__()
        resize_images(torch.zeros(1, 1, 2, 2), (2, 2), resize)  # validate the mode early
        self.resize = resize
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _Mixed35(192, 32)
        self.Mixed_5c = _Mixed35(256, 64)
        self.Mixed_5d = _Mixed35(288, 64)
        self.Mixed_6a = _Reduce35(288)
        self.Mixed_6b = _Mixed17(768, 128)
        self.Mixed_6c = _Mixed17(768, 160)
        self.Mixed_6d = _Mixed17(768, 160)
        self.Mixed_6e = _Mixed17(768, 192)
        self.Mixed_7a = _Reduce17(768)
        self.Mixed_7b = _Mixed8(1280, max_pool=False)
        self.Mixed_7c = _Mixed8(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # logits head, unused for FID; present so the release file loads strictly
        if weights_path is not None:
            path = require_file(weights_path, "FID Inception", "metrics.fid.weights_path", WEIGHT_SOURCES["fid"])
            state = load_tensors(path, what="FID Inception weights")
            try:
                missing, unexpected = self.load_state_dict(state, strict=False)
            except RuntimeError as err:  # shape mismatches
                raise WeightsError(
                    f"FID Inception weights {path} do not match the TF Inception-v3 layout "
                    f"({str(err).splitlines()[-1].strip()[:120]}); use torch-fidelity's "
                    "weights-inception-2015-12-05-6726825d.pth"
                ) from err
            if missing or unexpected:
                raise WeightsError(
                    f"FID Inception weights {path} do not match the TF Inception-v3 layout ({len(missing)} missing, "
                    f"{len(unexpected)} unexpected keys, e.g. {(list(missing) + list(unexpected))[:2]}); use "
                    "torch-fidelity's weights-inception-2015-12-05-6726825d.pth"
                )
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "FIDInceptionV3":  # always frozen in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, imgs: Tensor) -> Tensor:
        if imgs.ndim != 4 or imgs.shape[1] != 3:
            raise ShapeError(f"FID Inception expects RGB images (N, 3, H, W); got {tuple(imgs.shape)}")
        if imgs.dtype != torch.uint8:
            raise ShapeError(f"FID Inception expects uint8 images in 0..255; got {imgs.dtype}")
        dtype = self.fc.weight.dtype
        x = resize_images(imgs.to(dtype), (INCEPTION_SIZE, INCEPTION_SIZE), self.resize)
        x = (x - 128.0) / 128.0
        x = _chain(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)
        x = F.max_pool2d(x, 3, stride=2)
        x = _chain(x, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)
        x = F.max_pool2d(x, 3, stride=2)
        x = _chain(x, self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                   self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)
        return x.mean(dim=(2, 3)).float()


# not `from torchmetrics.image import ...`: that export needs torch-fidelity
from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: E402


class FrechetInceptionDistanceLocal(FrechetInceptionDistance):
    """torchmetrics FID whose extractor is not a child module: no extractor weights in ``state_dict``.

    The extractor still follows ``.to(device)``. Build it with :func:`build_fid`.
    """

    def __init__(self, feature: nn.Module, **kwargs: Any):
        super().__init__(feature=feature, **kwargs)
        extractor = self._modules.pop("inception")
        object.__setattr__(self, "inception", extractor)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        extractor = self.__dict__.get("inception")
        if isinstance(extractor, nn.Module):
            extractor.to(self.device)
        return out


def build_fid(
    weights_path: Optional[Union[str, os.PathLike]] = None,
    extractor: Optional[nn.Module] = None,
    resize: str = "tf1",
    reset_real_features: bool = True,
    **kwargs: Any,
):
    """Build a torchmetrics ``FrechetInceptionDistance`` over a local extractor (never downloads).

    Exactly one of ``weights_path`` (TF Inception-v3 release file, read with ``weights_only=True``) or
    ``extractor`` (any module mapping uint8 ``(N, 3, H, W)`` to ``(N, d)``; give it ``num_features`` to skip the
    probe pass) is required. ``update(frames uint8 (N, 3, H, W), real=...)`` then ``compute()``.
    """
    if extractor is None:
        extractor = FIDInceptionV3(
            require_file(weights_path, "FID Inception", "metrics.fid.weights_path", WEIGHT_SOURCES["fid"]), resize
        )
    elif weights_path is not None:
        raise ValueError("give either an FID extractor module or a weights_path, not both")
    extractor.eval().requires_grad_(False)
    return FrechetInceptionDistanceLocal(feature=extractor, reset_real_features=reset_real_features, **kwargs)


def fid_protocol(extractor: nn.Module) -> Dict[str, Any]:
    """What the FID extractor does to the frames (written into reports)."""
    if isinstance(extractor, FIDInceptionV3):
        return {
            "extractor": "TF-2015 Inception-v3 pool3 (2048-d)",
            "input": "uint8 RGB 0..255",
            "resize": {"tf1": "TF1 bilinear to 299x299, no antialias (torch-fidelity parity)",
                       "bilinear": "torch bilinear to 299x299, no antialias",
                       "bilinear_antialias": "torch bilinear to 299x299 with antialias (torchmetrics>=1.8 default)"}[
                extractor.resize],
            "scaling": "(x - 128) / 128",
            "covariance": "unbiased (n-1), torchmetrics",
        }
    return {"extractor": f"custom {type(extractor).__name__}", "input": "uint8 RGB 0..255 (unchanged)",
            "covariance": "unbiased (n-1), torchmetrics"}
