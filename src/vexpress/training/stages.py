"""Training stages as data (spec §4.2): what trains, what starts at zero, how many frames, where weights come from.

A :class:`StageSpec` is built from ``conf/stage/*.yaml``; :func:`apply_stage` puts a :class:`VExpressNet` into that
stage (load the initial weights, zero the listed output projections, set ``requires_grad`` per parameter group,
switch gradient checkpointing). Nothing else in the package knows which stage is which: the three official stages
differ only in their YAML.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from vexpress.errors import InputError, VExpressError
from vexpress.training.schedules import Ramp, TimestepBias, as_schedule

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from vexpress.models.vexpress_net import VExpressNet

#: Parameter groups of :class:`vexpress.models.vexpress_net.VExpressNet` (kept in sync by a test).
KNOWN_GROUPS = (
    "reference_net_frozen",
    "reference_net",
    "motion_modules",
    "audio_attention",
    "reference_attention",
    "denoiser_base",
    "v_kps_guider",
    "audio_projection",
)

#: The output projections the official ``train.py`` zeroes at the start of every stage (spec §4.2 / §9.1).
OFFICIAL_ZERO_INIT = (
    "denoising_unet.*temporal_transformer.proj_out.*",
    "denoising_unet.*.attn2.to_out.*",
)


class StageError(VExpressError):
    """A stage invariant does not hold (trainable set, frozen weights, zero-initialised outputs)."""


@dataclass
class StageSpec:
    """One training stage.

    Attributes:
        name: stage name (``image``, ``audio_motion``, ``joint``); used in run names, tags and folder names.
        trainable: parameter groups of ``VExpressNet.parameter_groups()`` whose ``requires_grad`` is on; every
            other parameter is frozen.
        zero_init: glob patterns over ``VExpressNet.named_parameters()`` names of the output projections that start
            at exactly zero, so the layers behind them start as a no-op (official: motion-module ``proj_out`` and
            audio ``attn2.to_out``).
        frozen: glob patterns of parameters that stay frozen although their group trains (e.g. an output bias held
            at zero with ``zero_init``). The stage configs leave it out but one (``image_captioned``), so existing
            stage keys are unchanged.
        zero_init_at_start: apply ``zero_init`` after loading the initial weights. The official stage 3 does so too,
            which throws away what stage 2 learned in those projections (spec §9.1); our ``joint`` stage keeps them
            (``false``), the official behaviour is one flag away.
        num_frames: frames per training sample (official 1 / 20 / 8).
        batch_size: clips per device and step.
        max_steps: optimisation steps of the stage.
        lr: learning rate of the stage (official 1e-6 everywhere).
        gradient_checkpointing: recompute the denoiser's activations in backward (official: stage 2).
        reference_net_checkpointing: the same for the ReferenceNet.
        init_from: export folder (official file layout) to initialise from; ``None`` keeps the current weights
            (random or whatever the model config loaded). The curriculum sets it to the previous stage's export.
        lip_loss_weight: weight of the lip region in the loss for this stage (a number or a ``{start, end}`` ramp
            over the stage); ``None`` keeps the model's ``lip_loss_weight`` (1 = no extra weight, released configs).
        timestep_bias: how this stage draws its training timesteps when not uniformly (official): a mapping such as
            ``{strategy: later, portion: 0.5, multiplier: 3}``, parsed into a
            :class:`vexpress.training.schedules.TimestepBias` (beyond the paper). The stage configs leave it out, so
            existing stage keys are unchanged.
        lr_scale: per parameter group, a factor on the stage's ``lr`` (e.g. ``{audio_projection: 3}``: the new
            audio projection learns at three times the rate of the rest); groups must be trainable in the stage.
            The official stages use one rate for everything; the stage configs leave it out, so existing stage keys
            are unchanged.
        lr_schedule: how this stage's rate moves over its ``max_steps`` when not as the model's ``lr_scheduler``
            (official: constant): ``{name: cosine, warmup_steps: 1, final_factor: 0.05}`` warms up linearly, then
            decays along a cosine, reaching ``final_factor`` x ``lr`` as the stage ends (beyond the paper). The stage
            configs leave it out, so existing stage keys are unchanged.
        restore: parameters taken from another export or foundation folder once ``init_from`` is loaded and
            ``zero_init`` applied: ``{from: FOLDER, params: [glob, ...]}`` (beyond the paper; e.g. the embedded
            foundation's caption-trained ``attn2.to_out``, which the stage's ``zero_init`` would otherwise start at
            zero). The stage configs leave it out, so existing stage keys are unchanged.
        caption_distill: weight of the caption-distillation term in this stage's loss
            (:mod:`vexpress.training.caption_distill`; needs ``model.caption_teacher`` and ``data.captions=true``);
            ``None`` keeps the model's ``caption_distill_weight`` (beyond the paper; left out of the stage configs).
    """

    name: str
    trainable: list[str]
    zero_init: list[str] = field(default_factory=list)
    zero_init_at_start: bool = True
    num_frames: int = 1
    batch_size: int = 1
    max_steps: int = 1000
    lr: float = 1e-6
    gradient_checkpointing: bool = False
    reference_net_checkpointing: bool = False
    init_from: str | None = None
    lip_loss_weight: Any = None
    timestep_bias: Any = None
    frozen: list[str] = field(default_factory=list)
    lr_scale: dict[str, float] | None = None
    lr_schedule: dict[str, Any] | None = None
    restore: dict[str, Any] | None = None
    caption_distill: float | None = None

    def __post_init__(self) -> None:
        self.trainable = list(self.trainable)
        self.zero_init = list(self.zero_init or [])
        self.frozen = list(self.frozen or [])
        unknown = [g for g in self.trainable if g not in KNOWN_GROUPS]
        if unknown:
            raise InputError(f"stage {self.name!r}: unknown parameter groups {unknown}; choose from "
                             f"{list(KNOWN_GROUPS)}")
        if not self.trainable:
            raise InputError(f"stage {self.name!r} trains nothing; list at least one parameter group in `trainable`")
        for key in ("num_frames", "batch_size", "max_steps"):
            if int(getattr(self, key)) < 1:
                raise InputError(f"stage {self.name!r}: {key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise InputError(f"stage {self.name!r}: lr must be > 0, got {self.lr}")
        if self.lip_loss_weight is not None:
            self.lip_loss_weight = as_schedule(self.lip_loss_weight, f"stage {self.name!r} lip_loss_weight", low=0.0)
        if self.timestep_bias is not None and not isinstance(self.timestep_bias, TimestepBias):
            self.timestep_bias = TimestepBias.from_config(self.timestep_bias, f"stage {self.name!r} timestep_bias")
        if self.lr_scale:
            scales = {}
            for group, factor in dict(self.lr_scale).items():
                if group not in self.trainable:
                    raise InputError(f"stage {self.name!r}: lr_scale names {group!r}, which this stage does not "
                                     f"train; choose from {self.trainable}")
                try:
                    factor = float(factor)
                except (TypeError, ValueError):
                    factor = float("nan")
                if not factor > 0 or factor == float("inf"):
                    raise InputError(f"stage {self.name!r}: lr_scale.{group} must be a positive number, got "
                                     f"{self.lr_scale[group]!r}")
                scales[str(group)] = factor
            self.lr_scale = scales
        else:
            self.lr_scale = None
        self.lr_schedule = _lr_schedule(self.lr_schedule, self.name)
        self.restore = _restore(self.restore, self.name)
        if self.caption_distill is not None:
            try:
                weight = float(self.caption_distill)
            except (TypeError, ValueError):
                weight = float("nan")
            if not 0.0 <= weight < float("inf"):
                raise InputError(f"stage {self.name!r}: caption_distill must be a number >= 0, got "
                                 f"{self.caption_distill!r}")
            self.caption_distill = weight
        if self.init_from in ("", "null", "None"):
            self.init_from = None

    @property
    def effective_zero_init(self) -> list[str]:
        """The patterns that :func:`apply_stage` zeroes (empty when ``zero_init_at_start`` is off)."""
        return list(self.zero_init) if self.zero_init_at_start else []

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        ramp: Ramp | None = self.lip_loss_weight
        if ramp is not None:
            d["lip_loss_weight"] = {"start": ramp.start, "end": ramp.end, "begin": ramp.begin, "finish": ramp.finish}
        if self.timestep_bias is not None:
            d["timestep_bias"] = dataclasses.asdict(self.timestep_bias)
        return d


#: a stage's ``lr_schedule`` kinds -> their settings and defaults
LR_SCHEDULES = {"cosine": {"warmup_steps": 1, "final_factor": 0.05}}


def _lr_schedule(value: Any, stage: str) -> dict[str, Any] | None:
    """A stage's ``lr_schedule`` checked and completed with its defaults (``None``: the model's scheduler)."""
    if value is None or value == {}:
        return None
    where = f"stage {stage!r} lr_schedule"
    try:
        given = dict(value)
    except (TypeError, ValueError):
        raise InputError(f"{where} must be a mapping such as {{name: cosine, final_factor: 0.05}}, got {value!r}")
    name = given.pop("name", None)
    if name not in LR_SCHEDULES:
        raise InputError(f"{where}: name must be one of {sorted(LR_SCHEDULES)}, got {name!r}")
    settings = dict(LR_SCHEDULES[name])
    unknown = sorted(set(given) - set(settings))
    if unknown:
        raise InputError(f"{where}: unknown settings {unknown}; {name} takes {sorted(settings)}")
    settings.update(given)
    try:
        warmup, final = int(settings["warmup_steps"]), float(settings["final_factor"])
    except (TypeError, ValueError):
        raise InputError(f"{where}: warmup_steps must be an integer and final_factor a number, got {given!r}")
    if warmup < 1 or not 0.0 <= final <= 1.0:
        raise InputError(f"{where}: need warmup_steps >= 1 and 0 <= final_factor <= 1, got {warmup} and {final}")
    return {"name": name, "warmup_steps": warmup, "final_factor": final}


def _restore(value: Any, stage: str) -> dict[str, Any] | None:
    """A stage's ``restore`` checked (``None``: nothing is taken from another folder)."""
    if value is None or value == {}:
        return None
    where = f"stage {stage!r} restore"
    try:
        given = dict(value)
    except (TypeError, ValueError):
        raise InputError(f"{where} must be a mapping {{from: FOLDER, params: [glob, ...]}}, got {value!r}")
    unknown = sorted(set(given) - {"from", "params"})
    folder, params = given.get("from"), given.get("params")
    if isinstance(params, str):
        params = [params]
    if unknown or not folder or not params or not all(isinstance(p, str) and p for p in params):
        raise InputError(f"{where} must be {{from: FOLDER, params: [glob, ...]}} with a folder and at least one "
                         f"parameter pattern, got {value!r}")
    return {"from": str(folder), "params": list(params)}


# -------------------------------------------------------------------------------------------------------------------
def _groups(net: "VExpressNet") -> dict[str, list[str]]:
    return net.parameter_groups()


def trainable_parameter_names(net: "VExpressNet", spec: StageSpec) -> list[str]:
    """Names of the parameters the stage trains, in ``named_parameters()`` order."""
    want = set()
    groups = _groups(net)
    for g in spec.trainable:
        want.update(groups[g])
    names = [n for n, _ in net.named_parameters()]
    held = set(resolve_patterns(names, spec.frozen, "frozen")) if spec.frozen else set()
    return [n for n in names if n in want and n not in held]


def resolve_patterns(names: Iterable[str], patterns: Sequence[str], what: str = "zero_init") -> list[str]:
    """Names matched by any glob pattern; a pattern that matches nothing is a config error."""
    names = list(names)
    out: list[str] = []
    for pat in patterns:
        hits = fnmatch.filter(names, pat)
        if not hits:
            raise InputError(f"{what} pattern {pat!r} matches no parameter of the network; fix the stage config")
        out.extend(h for h in hits if h not in out)
    return out


@dataclass
class StageReport:
    """What :func:`apply_stage` did (logged at stage start)."""

    stage: str
    trainable: list[str]
    zeroed: list[str]
    loaded_from: str | None
    num_trainable: int
    num_frozen: int
    restored: list[str] = field(default_factory=list)
    restored_from: str | None = None

    def summary(self) -> str:
        src = self.loaded_from or "current weights"
        text = (f"stage {self.stage}: {self.num_trainable:,} trainable / {self.num_frozen:,} frozen parameters, "
                f"{len(self.zeroed)} tensors zero-initialised, initialised from {src}")
        if self.restored:
            text += f", {len(self.restored)} tensors from {self.restored_from}"
        return text


def apply_stage(
    net: "VExpressNet",
    spec: StageSpec,
    load: Callable[["VExpressNet", str], Any] | None = None,
) -> StageReport:
    """Put ``net`` into ``spec``: load ``init_from``, zero ``zero_init``, take ``restore``'s parameters from its
    folder, set ``requires_grad``, checkpointing.

    Args:
        net: the network (modified in place).
        spec: the stage.
        load: ``load(net, folder)`` for ``init_from`` (strict); defaults to
            :func:`vexpress.training.export.load_weights`.
    """
    import torch

    if load is None:
        from vexpress.training.export import load_weights

        load = load_weights
    restored: dict[str, torch.Tensor] = {}
    if spec.restore:
        if not spec.init_from:
            raise InputError(f"stage {spec.name!r}: restore takes parameters from {spec.restore['from']} over "
                             "init_from's weights; set stage.init_from (a chained stage gets the previous export)")
        # the folder is loaded first and only the named tensors kept; the rest goes back to what it was, so what
        # init_from does not hold (a foundation lacks the audio projection) keeps the network's own values
        params = dict(net.named_parameters())
        names = resolve_patterns(params, spec.restore["params"], f"stage {spec.name!r} restore")
        before = {n: p.detach().clone() for n, p in params.items()}
        load(net, spec.restore["from"])
        restored = {n: params[n].detach().clone() for n in names}
        with torch.no_grad():
            for n, value in before.items():
                params[n].copy_(value)
        del before
    loaded = None
    if spec.init_from:
        load(net, spec.init_from)
        loaded = str(spec.init_from)
    params = dict(net.named_parameters())
    zeroed = resolve_patterns(params, spec.effective_zero_init)
    with torch.no_grad():
        for name in zeroed:
            params[name].zero_()
        for name, value in restored.items():
            params[name].copy_(value)
    train = set(trainable_parameter_names(net, spec))
    n_train = n_frozen = 0
    for name, p in params.items():
        p.requires_grad_(name in train)
        if name in train:
            n_train += p.numel()
        else:
            n_frozen += p.numel()
    net.set_gradient_checkpointing(denoiser=spec.gradient_checkpointing,
                                   reference_net=spec.reference_net_checkpointing)
    return StageReport(spec.name, sorted(train), [n for n in zeroed if n not in restored], loaded, n_train, n_frozen,
                       sorted(restored), spec.restore["from"] if spec.restore else None)


def check_trainable(net: "VExpressNet", spec: StageSpec) -> None:
    """Raise :class:`StageError` unless exactly the stage's groups have ``requires_grad``."""
    want = set(trainable_parameter_names(net, spec))
    have = {n for n, p in net.named_parameters() if p.requires_grad}
    if want != have:
        extra, missing = sorted(have - want), sorted(want - have)
        raise StageError(
            f"stage {spec.name!r}: trainable set differs from the stage config "
            f"({len(extra)} unexpected, e.g. {extra[:1]}; {len(missing)} missing, e.g. {missing[:1]})"
        )


def fingerprint(tensors: Mapping[str, "torch.Tensor"]) -> dict[str, str]:
    """A bit-exact digest per tensor (sha1 of its bytes), cheap enough to check frozen weights after a stage."""
    import torch

    out = {}
    for name, t in tensors.items():
        data = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8)
        out[name] = hashlib.sha1(data.numpy().tobytes()).hexdigest()
    return out


def frozen_parameters(net: "VExpressNet") -> dict[str, "torch.Tensor"]:
    return {n: p for n, p in net.named_parameters() if not p.requires_grad}


def check_frozen_unchanged(net: "VExpressNet", before: Mapping[str, str], stage: str = "") -> None:
    """Raise :class:`StageError` if any frozen parameter's digest differs from ``before``."""
    now = fingerprint({n: p for n, p in net.named_parameters() if n in before})
    changed = sorted(n for n, d in before.items() if now.get(n) != d)
    if changed:
        raise StageError(f"stage {stage!r}: {len(changed)} frozen parameters changed, e.g. {changed[0]}")
