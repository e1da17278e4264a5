"""Official-code parity vector sets: discovery, settings, weights and the comparison metric.

A vector set is a folder with ``config.json`` (every constructor argument and run setting, in the layout of
``shared/parity/dev/config.json``) and ``inputs_outputs.safetensors``. Its weights are either files in the folder
(``reference_net.safetensors`` ...) or, to keep small sets small, a ``weights`` section in ``config.json`` naming the
files of another set with their SHA-256 (``{"from_set": "dev", "files": {"reference_net": {"file": ..., "sha256":
...}}}``).

The parity tests run once per set found here (:func:`parity_set_params`):

- ``dev``: the shared set, ``$VEXPRESS_PARITY_DIR`` or ``<shared>/parity/dev``;
- every folder under ``tests/parity_sets/`` that holds a ``config.json``;
- every path in ``$VEXPRESS_PARITY_SETS`` (``os.pathsep``-separated), to point the tests at other official sets.

Every setting a test uses comes from the set's ``config.json`` (:class:`ParitySet`), never from constants.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import torch

#: max |ours - ref| <= TOLERANCE * max |ref| (shared/parity/README.md "Tolerances"); a set may override it with
#: ``config.json -> tolerance -> relative_max``.
TOLERANCE = 1e-4

#: Sets committed with the repository (one folder each).
REPO_SETS_DIR = Path(__file__).resolve().parents[1] / "parity_sets"

#: The four weight files every set needs (``motion_module`` is optional: its tensors repeat the UNet's).
WEIGHT_MODULES = ("reference_net", "denoising_unet", "v_kps_guider", "audio_projection")


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative max error as the parity README defines it."""
    ours = ours.detach().to(torch.float64).cpu()
    ref = ref.detach().to(torch.float64).cpu()
    if ours.shape != ref.shape:
        raise AssertionError(f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}")
    scale = ref.abs().max().item()
    return (ours - ref).abs().max().item() / (scale if scale > 0 else 1.0)


def assert_parity(name: str, ours: torch.Tensor, ref: torch.Tensor, tol: float = TOLERANCE) -> float:
    err = rel_err(ours, ref)
    if not err <= tol:
        raise AssertionError(f"{name}: relative max error {err:.3e} exceeds {tol:.0e}")
    return err


# ----------------------------------------------------------------------------------------------------------------
# discovery
# ----------------------------------------------------------------------------------------------------------------
def _env_set_paths() -> list[Path]:
    raw = os.environ.get("VEXPRESS_PARITY_SETS", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def parity_set_locations() -> list[tuple[str, Path]]:
    """(test id, folder) of every set to test: shared dev, the repository's sets, then ``$VEXPRESS_PARITY_SETS``.

    The dev entry is always listed (its tests skip with the reason when the folder is absent); duplicates (the
    same folder reached twice) are dropped; ids are made unique.
    """
    from vexpress.utils.paths import parity_dir

    found: list[tuple[str, Path]] = [("dev", parity_dir())]
    if REPO_SETS_DIR.is_dir():
        found += [(d.name, d) for d in sorted(REPO_SETS_DIR.iterdir()) if (d / "config.json").is_file()]
    found += [(p.name or str(p), p) for p in _env_set_paths()]
    out: list[tuple[str, Path]] = []
    seen_paths: set[Path] = set()
    seen_ids: set[str] = set()
    for name, path in found:
        key = path.resolve()
        if key in seen_paths:
            continue
        seen_paths.add(key)
        ident, n = name, 2
        while ident in seen_ids:
            ident, n = f"{name}-{n}", n + 1
        seen_ids.add(ident)
        out.append((ident, path))
    return out


def parity_set_params() -> list[Any]:
    """``pytest.param(folder, id=name)`` for every set, for ``@pytest.fixture(params=...)``."""
    return [pytest.param(path, id=name) for name, path in parity_set_locations()]


# ----------------------------------------------------------------------------------------------------------------
# one set
# ----------------------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ParitySet:
    """A vector set and its settings, all read from its ``config.json``."""

    path: Path
    config: dict[str, Any]
    name: str = ""
    _vectors: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: Path) -> "ParitySet":
        """Read a set, or skip the calling test (with the reason) when its files are absent."""
        path = Path(path)
        if not (path / "config.json").is_file():
            pytest.skip(reason=f"parity vectors not present at {path} (set VEXPRESS_PARITY_DIR or "
                               f"VEXPRESS_PARITY_SETS)")
        if not (path / "inputs_outputs.safetensors").is_file():
            pytest.skip(reason=f"{path} has config.json but no inputs_outputs.safetensors")
        config = json.loads((path / "config.json").read_text())
        return cls(path=path, config=config, name=str(config.get("set", path.name)))

    # settings -----------------------------------------------------------------------------------------------
    @property
    def sizes(self) -> dict[str, Any]:
        return self.config["sizes"]

    @property
    def single_forward(self) -> dict[str, Any]:
        return self.config["single_forward"]

    @property
    def sampling(self) -> dict[str, Any]:
        return self.config["sampling"]

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels (height = rows)."""
        return int(self.sizes["image_height"]), int(self.sizes["image_width"])

    @property
    def latent_size(self) -> tuple[int, int]:
        return int(self.sizes["latent_height"]), int(self.sizes["latent_width"])

    @property
    def latent_downscale(self) -> int:
        (height, width), (h, w) = self.image_size, self.latent_size
        if height % h or width % w or height // h != width // w:
            raise AssertionError(f"{self.name}: image {height}x{width} is not a whole multiple of latents {h}x{w}")
        return height // h

    @property
    def tolerance(self) -> float:
        return float(self.config.get("tolerance", {}).get("relative_max", TOLERANCE))

    @property
    def ref_bank_blocks(self) -> list[str]:
        derived = self.config.get("derived", {}).get("ref_bank_blocks")
        if derived:
            return list(derived)
        return [k[len("ref_bank."):] for k in self.vectors if k.startswith("ref_bank.")]

    # data ---------------------------------------------------------------------------------------------------
    @property
    def vectors(self) -> dict[str, torch.Tensor]:
        if self._vectors is None:
            from safetensors.torch import load_file

            self._vectors = load_file(str(self.path / "inputs_outputs.safetensors"))
        return self._vectors

    @cached_property
    def weight_files(self) -> Path | dict[str, Path]:
        """The folder holding the weights, or ``{module: file}`` from the set named in ``config.json -> weights``.

        Skips the calling test (with the reason) when the referenced files cannot be found with the recorded
        SHA-256.
        """
        if all(any(self.path.glob(f"{m}.*")) for m in WEIGHT_MODULES):
            return self.path
        spec = self.config.get("weights")
        if not spec:
            pytest.skip(reason=f"{self.path} holds no weight files and its config.json names none ('weights')")
        from vexpress.utils.paths import parity_dir, shared_dir

        source = str(spec["from_set"])
        candidates = [self.path.parent / source, shared_dir() / "parity" / source, *_env_set_paths()]
        if source == "dev":
            candidates.insert(0, parity_dir())
        candidates = list(dict.fromkeys(candidates))  # keep the order, drop repeats
        for folder in candidates:
            if not folder.is_dir():
                continue
            files = {m: folder / entry["file"] for m, entry in spec["files"].items()}
            if all(f.is_file() for f in files.values()) and all(
                    _sha256(files[m]) == entry["sha256"] for m, entry in spec["files"].items()):
                return files
        pytest.skip(reason=f"the '{source}' weights that {self.path.name}/config.json names (with their SHA-256) "
                           f"were not found in {', '.join(str(c) for c in candidates)}")

    def net_config(self, num_padding_audio_frames: int | None = None):
        """The network config of the set; the audio padding and latent scale are the set's run settings."""
        from vexpress.models import VExpressConfig

        d = dict(self.config)
        d["latent_downscale"] = self.latent_downscale
        if num_padding_audio_frames is not None:
            d["num_padding_audio_frames"] = int(num_padding_audio_frames)
        return VExpressConfig.from_dict(d)

    def load_net(self, num_padding_audio_frames: int | None = None):
        """The set's network with its official random weights, loaded strictly, in eval mode."""
        from vexpress.models import VExpressNet
        from vexpress.models.weights import load_official

        net = VExpressNet(self.net_config(num_padding_audio_frames))
        load_official(net, self.weight_files)
        return net.eval()

    def make_scheduler(self):
        """Our scheduler factory with the set's scheduler: its class and kwargs, every other argument at the diffusers
        default of that class (as the official code constructs it). Skips if we have no sampler of that class."""
        import diffusers

        from vexpress.pipelines.schedulers import SAMPLERS, make_scheduler

        spec = self.config["scheduler"]
        cls_name = str(spec.get("class", "diffusers.DDIMScheduler")).rsplit(".", 1)[-1]
        ours = [name for name, (cls, _) in SAMPLERS.items() if cls == cls_name]
        if not ours:
            pytest.skip(reason=f"{self.name}: scheduler {cls_name} is not one of our samplers "
                               f"({', '.join(c for c, _ in SAMPLERS.values())}); the loop cannot honour it")
        official = getattr(diffusers, cls_name)(**spec.get("kwargs", {}))
        full = {k: v for k, v in dict(official.config).items() if not k.startswith("_")}
        return make_scheduler(ours[0], **full)


def official_uniform_windows(num_frames: int, context_frames: int, context_overlap: int) -> list[list[int]]:
    """The official ``uniform`` context schedule as the official pipeline calls it (step 0, stride 1,
    ``closed_loop=False``), written from its definition: window starts ``range(0, T - O, C - O)``, frames past the
    end folded back to ``T - 2 - e % T``."""
    if num_frames <= context_frames:
        return [list(range(num_frames))]
    windows = []
    for start in range(0, num_frames - context_overlap, context_frames - context_overlap):
        windows.append([e if e < num_frames else num_frames - 2 - e % num_frames
                        for e in range(start, start + context_frames)])
    return windows


def sampling_unsupported(ps: ParitySet) -> str | None:
    """Why our sampling loop cannot reproduce the set's run, or None (every setting can be honoured)."""
    sp = ps.sampling
    if float(sp.get("eta", 0.0)) != 0.0:
        return f"eta={sp['eta']}: VExpressPipeline.denoise runs DDIM with eta 0 only"
    if sp.get("context_schedule", "uniform") != "uniform":
        return f"context_schedule={sp['context_schedule']!r}: only the official 'uniform' schedule is implemented"
    if float(sp.get("strength", 1.0)) != 1.0:
        return f"strength={sp['strength']}: img2img-style partial denoising is not implemented"
    return None
