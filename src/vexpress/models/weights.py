"""Weights: the official V-Express checkpoint files, our export folder, and initialisation from other projects.

Official release / training files (spec §4.4, §8), one flat state dict each:

=================  ==========================================================================================
``denoising_unet``  the whole 3D UNet (SD1.5 keys + ``attn1_5``/``norm1_5`` + motion modules)
``motion_module``   the subset of ``denoising_unet`` keys containing ``motion_module``
``reference_net``   the SD1.5 2D UNet without ``conv_norm_out``
``v_kps_guider``    the V-Kps guider
``audio_projection`` the audio perceiver
=================  ==========================================================================================

Loading is strict, unlike the official loader (which silently runs with random layers on a key mismatch): any
missing key, unexpected key or shape difference raises :class:`~vexpress.errors.WeightsError` listing them.
Files are read with :func:`vexpress.utils.io.load_tensors` (safetensors or weights-only ``torch.load``).

Export folder (what a training stage writes and the pipeline reads)::

    <dir>/vexpress.json               {"format": "vexpress-export", "version": 1, "network": VExpressConfig,
                                       "vae": "vae" | null, "audio_encoder": {...} | null, "extra": {...}}
    <dir>/<module>.safetensors        the five official files above
    <dir>/vae/                        optional diffusers AutoencoderKL (save_pretrained)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from vexpress.errors import WeightsError
from vexpress.utils.io import atomic_dir, load_tensors, save_tensors

OFFICIAL_FILES = ("denoising_unet", "motion_module", "reference_net", "v_kps_guider", "audio_projection")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
EXPORT_MANIFEST = "vexpress.json"
EXPORT_FORMAT = "vexpress-export"


# --------------------------------------------------------------------------------------------------------------
# key checking
# --------------------------------------------------------------------------------------------------------------
def _listing(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def check_state_dict(what: str, expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor],
                     source: str | os.PathLike = "") -> None:
    """Raise a one-line :class:`WeightsError` if ``given`` does not match ``expected`` key for key and shape."""
    missing = set(expected) - set(given)
    unexpected = set(given) - set(expected)
    shapes = [k for k in set(expected) & set(given) if tuple(expected[k].shape) != tuple(given[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_listing(unexpected)}")
    if shapes:
        detail = [f"{k} {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}" for k in sorted(shapes)[:4]]
        parts.append(f"shape mismatches ({len(shapes)}): " + "; ".join(detail))
    src = f" in {source}" if source else ""
    raise WeightsError(
        f"{what} weights{src} do not match the model ({'; '.join(parts)}); check that the file is a V-Express "
        f"{what} checkpoint and that the network config (e.g. sd15 vs tiny) matches it"
    )


def _module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers as the official files store them."""
    if hasattr(module, "official_state_dict"):
        return dict(module.official_state_dict())
    return dict(module.state_dict())


def _assign(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy ``tensors`` (already checked) into ``module`` keeping the module's dtype/device."""
    target = module.unet if hasattr(module, "official_state_dict") else module
    own = target.state_dict()
    converted = {k: v.to(dtype=own[k].dtype) for k, v in tensors.items()}
    result = target.load_state_dict(converted, strict=True)
    if result.missing_keys or result.unexpected_keys:  # pragma: no cover - check_state_dict ran before
        raise WeightsError(f"internal key mismatch: {result}")


# --------------------------------------------------------------------------------------------------------------
# official files
# --------------------------------------------------------------------------------------------------------------
def official_state_dicts(net: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """The five official state dicts of a :class:`~vexpress.models.vexpress_net.VExpressNet`."""
    unet = _module_tensors(net.denoising_unet)
    return {
        "denoising_unet": unet,
        "motion_module": {k: v for k, v in unet.items() if "motion_module" in k},
        "reference_net": _module_tensors(net.reference_net),
        "v_kps_guider": _module_tensors(net.v_kps_guider),
        "audio_projection": _module_tensors(net.audio_projection),
    }


def save_official(net: torch.nn.Module, directory: str | os.PathLike, fmt: str = "safetensors",
                  modules: Iterable[str] = OFFICIAL_FILES) -> dict[str, Path]:
    """Write the official files (``<name>.safetensors`` or ``.bin``/``.pth`` torch files) atomically."""
    if fmt not in ("safetensors", "bin", "pth"):
        raise ValueError(f"unknown weight format {fmt!r} (safetensors, bin or pth)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dicts = official_state_dicts(net)
    paths = {}
    for name in modules:
        path = directory / f"{name}.{fmt}"
        save_tensors(path, dicts[name])
        paths[name] = path
    return paths


def find_official_files(directory: str | os.PathLike) -> dict[str, Path]:
    """Locate ``<name>.{safetensors,bin,pth,pt,ckpt}`` for each official module name in ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise WeightsError(f"weights folder not found: {directory} (give the folder holding denoising_unet.* etc.)")
    found: dict[str, Path] = {}
    for name in OFFICIAL_FILES:
        for suffix in WEIGHT_SUFFIXES:
            path = directory / f"{name}{suffix}"
            if path.is_file():
                found[name] = path
                break
    return found


@dataclass
class LoadReport:
    """What :func:`load_official` and the converters loaded: ``{module: source}`` plus notes."""

    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{k} <- {v}" for k, v in self.sources.items()] + self.notes
        return "\n".join(lines)


def load_official(net: torch.nn.Module, source: str | os.PathLike | Mapping[str, str | os.PathLike],
                  modules: Iterable[str] | None = None) -> LoadReport:
    """Load official V-Express files into ``net`` with strict key and shape checks.

    Args:
        net: a ``VExpressNet`` built with the matching config (``VExpressConfig.sd15()`` for the release).
        source: a folder holding ``denoising_unet.*``, ``reference_net.*`` ... or a mapping ``{name: path}``
            (useful for training-step names such as ``denoising_unet-100001.pth``).
        modules: which of ``denoising_unet``, ``reference_net``, ``v_kps_guider``, ``audio_projection`` must be
            loaded (default: all four). ``motion_module`` is optional: when present, its tensors replace the
            motion-module part of ``denoising_unet`` (the official inference loads both, in that order); the
            union of the two files must then cover the UNet exactly.
    """
    files = find_official_files(source) if not isinstance(source, Mapping) else {k: Path(v) for k, v in source.items()}
    default = ["denoising_unet", "reference_net", "v_kps_guider", "audio_projection"]
    wanted = list(modules) if modules is not None else default
    absent = [m for m in wanted if m not in files]
    if absent:
        where = source if not isinstance(source, Mapping) else "the given paths"
        raise WeightsError(f"missing weight files for {', '.join(absent)} in {where} "
                           f"(expected <name>{{{','.join(WEIGHT_SUFFIXES)}}})")
    report = LoadReport()
    for name in wanted:
        if name == "denoising_unet":
            expected = _module_tensors(net.denoising_unet)
            tensors = load_tensors(files[name], "denoising_unet")
            if "motion_module" in files:
                motion = load_tensors(files["motion_module"], "motion_module")
                bad = [k for k in motion if "motion_module" not in k]
                if bad:
                    raise WeightsError(f"motion_module file {files['motion_module']} holds non-motion keys: "
                                       f"{_listing(bad)}")
                tensors = {**tensors, **motion}
                report.notes.append(f"motion modules taken from {files['motion_module']}")
            check_state_dict("denoising_unet", expected, tensors, files[name])
            _assign(net.denoising_unet, tensors)
        else:
            module = getattr(net, name)
            tensors = load_tensors(files[name], name)
            check_state_dict(name, _module_tensors(module), tensors, files[name])
            _assign(module, tensors)
        report.sources[name] = str(files[name])
    return report


# --------------------------------------------------------------------------------------------------------------
# export folder
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Export:
    """A loaded export folder."""

    net: torch.nn.Module
    vae: Any | None
    manifest: dict[str, Any]
    path: Path

    @property
    def audio_encoder(self) -> dict[str, Any] | None:
        return self.manifest.get("audio_encoder")

    @property
    def extra(self) -> dict[str, Any]:
        return self.manifest.get("extra") or {}


def save_export(directory: str | os.PathLike, net: torch.nn.Module, vae: Any | None = None,
                audio_encoder: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write an export folder atomically: it appears complete under its final name or not at all.

    Args:
        directory: destination (replaced if it exists).
        net: the ``VExpressNet`` (its ``config`` is stored).
        vae: optional ``diffusers.AutoencoderKL`` saved under ``vae/``.
        audio_encoder: the audio encoder's config (name, local path or parameters) the model was trained with.
        extra: anything else worth keeping (stage name, step, metrics).
    """
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        save_official(net, tmp, "safetensors")
        if vae is not None:
            vae.save_pretrained(tmp / "vae", safe_serialization=True)
        manifest = {
            "format": EXPORT_FORMAT,
            "version": 1,
            "network": net.config.to_dict(),
            "vae": "vae" if vae is not None else None,
            "audio_encoder": dict(audio_encoder) if audio_encoder else None,
            "extra": dict(extra) if extra else {},
        }
        (tmp / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return directory


def read_export_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / EXPORT_MANIFEST
    if not path.is_file():
        raise WeightsError(f"{directory} is not a vexpress export (no {EXPORT_MANIFEST}); give a training export "
                           "folder, or official weights with their network config")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != EXPORT_FORMAT:
        raise WeightsError(f"{path} is not a vexpress export manifest (format={manifest.get('format')!r})")
    return manifest


def load_export(directory: str | os.PathLike, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None, load_vae: bool = True) -> Export:
    """Build the network from an export folder, load its weights strictly, and load its VAE if it has one."""
    from vexpress.models.config import VExpressConfig
    from vexpress.models.vexpress_net import VExpressNet

    directory = Path(directory)
    manifest = read_export_manifest(directory)
    net = VExpressNet(VExpressConfig.from_dict(manifest["network"]))
    load_official(net, directory)
    vae = None
    if load_vae and manifest.get("vae"):
        from diffusers import AutoencoderKL

        vae_dir = directory / manifest["vae"]
        if not vae_dir.is_dir():
            raise WeightsError(f"export {directory} names a VAE folder {vae_dir} that does not exist")
        vae = AutoencoderKL.from_pretrained(str(vae_dir), local_files_only=True, low_cpu_mem_usage=False)
    if device is not None or dtype is not None:
        net.to(device=device, dtype=dtype)
        if vae is not None:
            vae.to(device=device)
            if dtype is not None and vae.dtype != dtype:
                vae.to(dtype=dtype)  # diffusers warns about every dtype cast, even a no-op one
    return Export(net=net.eval(), vae=vae.eval() if vae is not None else None, manifest=manifest, path=directory)


# --------------------------------------------------------------------------------------------------------------
# initialisation from other projects
# --------------------------------------------------------------------------------------------------------------
def _resolve_weight_file(path: str | os.PathLike, names: Iterable[str]) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise WeightsError(f"no weight file ({', '.join(names)}) in {path}")
    return path


def _is_sd_base_key(key: str) -> bool:
    return "motion_modules" not in key and ".attn1_5." not in key and ".norm1_5." not in key


def _reference_copy(key: str) -> str | None:
    """attn1_5/norm1_5 key -> the attn1/norm1 key of the same transformer block (Moore-style initialisation)."""
    if ".attn1_5." in key:
        return key.replace(".attn1_5.", ".attn1.")
    if ".norm1_5." in key:
        return key.replace(".norm1_5.", ".norm1.")
    return None


def _load_into_unet_base(net: torch.nn.Module, tensors: Mapping[str, torch.Tensor], what: str, source: Path,
                         copy_reference_attention: bool = True) -> list[str]:
    """Load SD-layout UNet weights into the denoiser base (+ attn1_5/norm1_5 copied from attn1/norm1)."""
    own = _module_tensors(net.denoising_unet)
    base = {k: v for k, v in own.items() if _is_sd_base_key(k)}
    given = {k: v for k, v in tensors.items() if "motion_module" not in k}
    given_base = {k: v for k, v in given.items() if _is_sd_base_key(k)}
    check_state_dict(what, base, given_base, source)
    new = dict(own)
    new.update(given_base)
    notes = []
    ref_keys = [k for k in own if _reference_copy(k)]
    if all(k in given for k in ref_keys):
        new.update({k: given[k] for k in ref_keys})
        notes.append(f"reference attention (attn1_5/norm1_5) loaded from {source}")
    elif copy_reference_attention:
        new.update({k: given_base[_reference_copy(k)] for k in ref_keys})
        notes.append("reference attention (attn1_5/norm1_5) initialised as copies of self-attention (attn1/norm1)")
    _assign(net.denoising_unet, new)
    return notes


def init_from_sd15(net: torch.nn.Module, unet_path: str | os.PathLike) -> LoadReport:
    """Initialise ReferenceNet and the denoiser's SD1.5 part from a local diffusers SD1.5 UNet.

    ``unet_path`` is the ``unet/`` folder of a diffusers SD1.5 (or sd-image-variations) checkpoint, or its
    ``diffusion_pytorch_model.{safetensors,bin}`` file. The original LDM single-file format is not accepted
    (convert it with diffusers first). ``attn1_5``/``norm1_5`` start as copies of ``attn1``/``norm1`` (as the
    official ``moore_pretrained`` conversion does); motion modules, guider and audio projection are untouched.
    """
    path = _resolve_weight_file(unet_path, ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"))
    tensors = load_tensors(path, "SD1.5 UNet")
    if any(k.startswith("model.diffusion_model.") for k in tensors):
        raise WeightsError(f"{path} is an original LDM checkpoint; give the diffusers unet/ folder instead")
    report = LoadReport()
    ref_expected = _module_tensors(net.reference_net)
    check_state_dict("SD1.5 UNet (as ReferenceNet)", ref_expected,
                     {k: v for k, v in tensors.items() if not k.startswith("conv_norm_out.")}, path)
    _assign(net.reference_net, {k: v for k, v in tensors.items() if k in ref_expected})
    report.sources["reference_net"] = str(path)
    report.notes += _load_into_unet_base(net, tensors, "SD1.5 UNet", path)
    report.sources["denoising_unet (SD1.5 part)"] = str(path)
    return report


def init_motion_modules(net: torch.nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load AnimateDiff motion modules (``mm_sd_v15_v2.ckpt`` layout) strictly into the denoiser."""
    path = Path(path)
    tensors = load_tensors(path, "AnimateDiff motion module")
    tensors = {k[len("module."):] if k.startswith("module.") else k: v for k, v in tensors.items()}
    own = _module_tensors(net.denoising_unet)
    motion_expected = {k: v for k, v in own.items() if "motion_module" in k}
    check_state_dict("motion_module", motion_expected, tensors, path)
    _assign(net.denoising_unet, {**own, **tensors})
    return LoadReport(sources={"motion_modules": str(path)})


def init_from_moore(net: torch.nn.Module, reference_unet: str | os.PathLike | None = None,
                    denoising_unet: str | os.PathLike | None = None,
                    pose_guider: str | os.PathLike | None = None) -> LoadReport:
    """Initialise from Moore-AnimateAnyone checkpoints (the official stage-1 initialisation, spec §4.2).

    - ``reference_unet.pth`` -> ReferenceNet (its ``conv_norm_out`` is dropped: the official ReferenceNet has none);
    - ``denoising_unet.pth`` -> the denoiser's SD1.5 part, with ``attn1_5``/``norm1_5`` copied from
      ``attn1``/``norm1`` (``denoising_unet_state_dict_type='moore_pretrained'``); motion modules stay as built;
    - ``pose_guider.pth`` -> the V-Kps guider (same layout as Moore's PoseGuider).
    """
    report = LoadReport()
    if reference_unet is not None:
        tensors = {k: v for k, v in load_tensors(reference_unet, "Moore reference_unet").items()
                   if not k.startswith("conv_norm_out.")}
        check_state_dict("Moore reference_unet", _module_tensors(net.reference_net), tensors, reference_unet)
        _assign(net.reference_net, tensors)
        report.sources["reference_net"] = str(reference_unet)
    if denoising_unet is not None:
        tensors = load_tensors(denoising_unet, "Moore denoising_unet")
        report.notes += _load_into_unet_base(net, tensors, "Moore denoising_unet", Path(denoising_unet))
        report.sources["denoising_unet (SD1.5 part)"] = str(denoising_unet)
    if pose_guider is not None:
        tensors = load_tensors(pose_guider, "Moore pose_guider")
        check_state_dict("Moore pose_guider", _module_tensors(net.v_kps_guider), tensors, pose_guider)
        _assign(net.v_kps_guider, tensors)
        report.sources["v_kps_guider"] = str(pose_guider)
    return report


# --------------------------------------------------------------------------------------------------------------
# the embedded foundation (the synthetic world's SD1.5 + Moore-AnimateAnyone)
# --------------------------------------------------------------------------------------------------------------
#: Manifest of a foundation folder: ``{"format": FOUNDATION_FORMAT, "network": VExpressConfig, "files": {...},
#: "vae": "vae", ...provenance (command, commit, wall time, loss curve)}``.
FOUNDATION_MANIFEST = "foundation.json"
FOUNDATION_FORMAT = "vexpress-foundation"
#: What a foundation holds, as Moore-AnimateAnyone does: ReferenceNet, the denoiser's 2D part (SD1.5 keys plus the
#: reference attention ``attn1_5``/``norm1_5``), the keypoint guider; ``motion_module`` when motion was pretrained.
FOUNDATION_FILES = ("reference_net", "denoising_unet", "v_kps_guider")


#: The foundation's speech encoder (the synthetic wav2vec2, :mod:`vexpress.audio.phonetic`), a sub-folder.
FOUNDATION_AUDIO_ENCODER = "audio_encoder"


def is_foundation(directory: str | os.PathLike) -> bool:
    return (Path(directory) / FOUNDATION_MANIFEST).is_file()


def read_foundation_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / FOUNDATION_MANIFEST
    if not path.is_file():
        raise WeightsError(f"{directory} is not a foundation folder (no {FOUNDATION_MANIFEST}); run "
                           "vexpress-foundation to make one")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FOUNDATION_FORMAT:
        raise WeightsError(f"{path} is not a foundation manifest (format={manifest.get('format')!r})")
    return manifest


def _save_foundation_networks(folder: Path, net: torch.nn.Module, dtype: torch.dtype, motion: bool) -> dict[str, int]:
    """Write the networks of a foundation (the 2D part of ``net``, its motion modules when ``motion``) into
    ``folder`` as ``dtype`` safetensors in the official layout; returns the size in bytes of each file."""
    dicts = official_state_dicts(net)
    parts = {
        "reference_net": dicts["reference_net"],
        "denoising_unet": {k: v for k, v in dicts["denoising_unet"].items() if "motion_module" not in k},
        "v_kps_guider": dicts["v_kps_guider"],
    }
    if motion:
        parts["motion_module"] = dicts["motion_module"]
    sizes = {}
    for name, tensors in parts.items():
        path = folder / f"{name}.safetensors"
        save_tensors(path, {k: v.to(dtype) for k, v in tensors.items()})
        sizes[path.name] = path.stat().st_size
    return sizes


def _network_files(sizes: Mapping[str, int]) -> list[str]:
    return sorted(name[: -len(".safetensors")] for name in sizes if name.endswith(".safetensors"))


def _check_foundation_info(info: Mapping[str, Any]) -> None:
    """Provenance ``info`` may not overwrite the manifest's own keys."""
    reserved = {"format", "version", "network", "vae", "files", "dtype", "audio_encoder"} & set(info)
    if reserved:
        raise ValueError(f"foundation info may not set {sorted(reserved)} (the manifest's own keys)")


def save_foundation(directory: str | os.PathLike, net: torch.nn.Module, vae: Any, info: Mapping[str, Any],
                    dtype: torch.dtype = torch.float16, motion: bool = False,
                    audio_encoder: str | os.PathLike | None = None) -> dict[str, int]:
    """Write a foundation folder atomically: the 2D part of ``net`` (and its motion modules when ``motion``) as
    ``dtype`` safetensors in the official layout, the VAE under ``vae/``, a copy of the ``audio_encoder`` folder
    (:mod:`vexpress.audio.phonetic`) under ``audio_encoder/`` when given, and ``foundation.json`` (``info`` plus the
    network config). Returns the size in bytes of each file."""
    _check_foundation_info(info)
    with atomic_dir(directory) as tmp:  # 0755: a folder meant for a repository
        sizes = _save_foundation_networks(tmp, net, dtype, motion)
        files = _network_files(sizes)
        sizes["vae"] = _save_vae_as(vae, tmp / "vae", dtype)
        if audio_encoder is not None:
            shutil.copytree(audio_encoder, tmp / FOUNDATION_AUDIO_ENCODER)
            sizes[FOUNDATION_AUDIO_ENCODER] = sum(p.stat().st_size for p in (tmp / FOUNDATION_AUDIO_ENCODER).iterdir())
        manifest = {"format": FOUNDATION_FORMAT, "version": 1, "network": net.config.to_dict(), "vae": "vae",
                    "files": files, "dtype": str(dtype).replace("torch.", ""),
                    **({"audio_encoder": FOUNDATION_AUDIO_ENCODER} if audio_encoder is not None else {}),
                    **dict(info)}
        (tmp / FOUNDATION_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return sizes


def replace_foundation_networks(directory: str | os.PathLike, net: torch.nn.Module, info: Mapping[str, Any],
                                motion: bool = False) -> dict[str, int]:
    """Replace the networks of an existing foundation folder (``vexpress-foundation only=networks``), atomically:
    the VAE, the audio encoder and their records stay; ``info`` (how the networks were made) updates the manifest,
    as do the network config and the list of files. The networks are written in the folder's own dtype."""
    directory = Path(directory)
    manifest = read_foundation_manifest(directory)
    _check_foundation_info(info)
    dtype = getattr(torch, str(manifest.get("dtype", "float16")))
    with atomic_dir(directory) as tmp:
        shutil.copytree(directory, tmp, dirs_exist_ok=True)
        for name in manifest.get("files", FOUNDATION_FILES):
            (tmp / f"{name}.safetensors").unlink(missing_ok=True)
        sizes = _save_foundation_networks(tmp, net, dtype, motion)
        manifest = {**manifest, **dict(info), "network": net.config.to_dict(), "files": _network_files(sizes)}
        (tmp / FOUNDATION_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return sizes


def foundation_networks_digest(directory: str | os.PathLike) -> str:
    """A digest of a foundation's network files (not its VAE decoder or records): what a stage that starts from
    it learns from, so a rebuilt foundation at the same path is another starting point (stage keys)."""
    directory = Path(directory)
    manifest = read_foundation_manifest(directory)
    h = hashlib.sha1()
    for name in sorted(manifest.get("files", FOUNDATION_FILES)):
        h.update(name.encode())
        with open(directory / f"{name}.safetensors", "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def add_foundation_audio_encoder(directory: str | os.PathLike, audio_encoder: str | os.PathLike,
                                 record: Mapping[str, Any]) -> int:
    """Add (or replace) the audio encoder of an existing foundation folder, atomically, leaving every other file
    and manifest entry as it is; ``record`` (how the encoder was made) goes into the manifest as
    ``audio_encoder_fit``. The caller checks that ``audio_encoder`` loads. Returns the encoder's size in bytes."""
    _replace_in_foundation(directory, FOUNDATION_AUDIO_ENCODER, lambda dst: shutil.copytree(audio_encoder, dst),
                           {"audio_encoder": FOUNDATION_AUDIO_ENCODER, "audio_encoder_fit": dict(record)})
    return sum(p.stat().st_size for p in (Path(directory) / FOUNDATION_AUDIO_ENCODER).iterdir())


#: What the latents depend on: a VAE whose tensors under these prefixes are unchanged encodes every frame as before.
VAE_ENCODER_PREFIXES = ("encoder.", "quant_conv.")


def vae_encoder_tensors(vae) -> dict[str, torch.Tensor]:
    """The tensors of the encoder half (``VAE_ENCODER_PREFIXES``), as float32 on the CPU."""
    return {k: v.detach().float().cpu() for k, v in vae.state_dict().items() if k.startswith(VAE_ENCODER_PREFIXES)}


def vae_encoder_digest(vae) -> str:
    """A short hash of the encoder half: equal digests encode frames to the same latents (so a latent cache, and
    every network trained on it, stays valid when only the decoder changes)."""
    h = hashlib.sha1()
    for name, t in sorted(vae_encoder_tensors(vae).items()):
        h.update(name.encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def replace_foundation_vae_decoder(directory: str | os.PathLike, vae: Any, record: Mapping[str, Any]) -> int:
    """Replace the VAE of an existing foundation folder by ``vae``, whose encoder half must be the foundation's
    (a decoder fine-tune, ``vexpress.training.vae.finetune_decoder``): the foundation's networks were trained on
    the old encoder's latents, which stay valid only then. Atomic; every other file and manifest entry is kept;
    ``record`` (how the decoder was made) goes into the manifest as ``vae_decoder_fit``. Returns the VAE's size in
    bytes."""
    directory = Path(directory)
    manifest = read_foundation_manifest(directory)
    dtype = getattr(torch, str(manifest.get("dtype", "float16")))
    old = vae_encoder_tensors(load_foundation_vae(directory))
    new = {k: v.to(dtype).float() for k, v in vae_encoder_tensors(vae).items()}  # as it will be stored
    if old.keys() != new.keys() or any(not torch.equal(old[k], new[k]) for k in old):
        raise WeightsError(f"the new VAE's encoder differs from the one in {directory}: the foundation's networks "
                           "were trained on that encoder's latents; fine-tune the decoder only, or rerun "
                           "vexpress-foundation as a whole")
    vae_dir = foundation_vae_dir(directory)
    _replace_in_foundation(directory, vae_dir.name, lambda dst: _save_vae_as(vae, dst, dtype),
                           {"vae_decoder_fit": dict(record)})
    return sum(p.stat().st_size for p in vae_dir.iterdir())


def _replace_in_foundation(directory: str | os.PathLike, part: str, write: Callable[[Path], Any],
                           manifest_update: Mapping[str, Any]) -> None:
    """Rewrite one sub-folder ``part`` of a foundation (``write(new_folder)``) and update its manifest, atomically,
    leaving every other file and manifest entry as it is."""
    directory = Path(directory)
    manifest = read_foundation_manifest(directory)
    with atomic_dir(directory) as tmp:
        shutil.copytree(directory, tmp, dirs_exist_ok=True)
        shutil.rmtree(tmp / part, ignore_errors=True)
        write(tmp / part)
        manifest = {**manifest, **dict(manifest_update)}
        (tmp / FOUNDATION_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")


def _save_vae_as(vae: Any, folder: Path, dtype: torch.dtype) -> int:
    """``vae.save_pretrained(folder)`` in ``dtype`` (the VAE itself keeps its own); returns the bytes written."""
    vae_dtype = vae.dtype
    vae.to(dtype=dtype)
    try:
        vae.save_pretrained(str(folder), safe_serialization=True)
    finally:
        vae.to(dtype=vae_dtype)
    return sum(p.stat().st_size for p in Path(folder).iterdir())


def init_from_foundation(net: torch.nn.Module, directory: str | os.PathLike) -> LoadReport:
    """Initialise ``net`` from a foundation folder, strictly: ReferenceNet, the denoiser's 2D part (reference
    attention included) and the V-Kps guider must match key for key and shape for shape; the motion modules too when
    the foundation has them. What the foundation does not hold (audio projection, motion modules otherwise) keeps
    its constructor initialisation, as the official stage 1 keeps what Moore-AnimateAnyone does not provide."""
    directory = Path(directory)
    manifest = read_foundation_manifest(directory)
    files = {name: directory / f"{name}.safetensors" for name in manifest.get("files", FOUNDATION_FILES)}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise WeightsError(f"foundation {directory} lacks {', '.join(missing)}; rerun vexpress-foundation")
    report = LoadReport()
    ref = {k: v.float() for k, v in load_tensors(files["reference_net"], "foundation reference_net").items()}
    check_state_dict("foundation reference_net", _module_tensors(net.reference_net), ref, files["reference_net"])
    _assign(net.reference_net, ref)
    report.sources["reference_net"] = str(files["reference_net"])
    own = _module_tensors(net.denoising_unet)
    unet = {k: v.float() for k, v in load_tensors(files["denoising_unet"], "foundation denoising_unet").items()}
    check_state_dict("foundation denoising_unet (2D part)", {k: v for k, v in own.items() if "motion_module" not in k},
                     unet, files["denoising_unet"])
    if "motion_module" in files:
        motion = {k: v.float() for k, v in load_tensors(files["motion_module"], "foundation motion_module").items()}
        check_state_dict("foundation motion_module", {k: v for k, v in own.items() if "motion_module" in k}, motion,
                         files["motion_module"])
        unet.update(motion)
        report.sources["motion_modules"] = str(files["motion_module"])
    _assign(net.denoising_unet, {**own, **unet})
    report.sources["denoising_unet (2D part)"] = str(files["denoising_unet"])
    guider = {k: v.float() for k, v in load_tensors(files["v_kps_guider"], "foundation v_kps_guider").items()}
    check_state_dict("foundation v_kps_guider", _module_tensors(net.v_kps_guider), guider, files["v_kps_guider"])
    _assign(net.v_kps_guider, guider)
    report.sources["v_kps_guider"] = str(files["v_kps_guider"])
    return report


def foundation_vae_dir(directory: str | os.PathLike) -> Path:
    """The foundation's VAE folder (a diffusers ``AutoencoderKL`` folder, named in its manifest)."""
    directory = Path(directory)
    vae_dir = directory / read_foundation_manifest(directory).get("vae", "vae")
    if not (vae_dir / "config.json").is_file():
        raise WeightsError(f"foundation {directory} has no VAE at {vae_dir}; rerun vexpress-foundation")
    return vae_dir


def load_foundation_vae(directory: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """The foundation's VAE (stored in half precision), as ``dtype``, frozen and in eval mode."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(foundation_vae_dir(directory)), local_files_only=True,
                                        low_cpu_mem_usage=False, torch_dtype=dtype)  # cast on load: no warning
    return vae.eval().requires_grad_(False)
