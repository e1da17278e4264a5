"""Training memory arithmetic: bytes per component for one optimisation step of a stage, and a CPU peak meter.

:func:`estimate_training_memory` answers "does stage S fit on a G-GB GPU, and with how many GPUs" from the network
config alone (the network is built on the ``meta`` device: shapes, no memory). It returns bytes per component so
that a measured CUDA peak can be compared line by line:

============================  ==================================================================================
component                     bytes
============================  ==================================================================================
``params_trainable``          trainable parameters, fp32 master weights (4 B each)
``params_frozen``             frozen parameters: fp32, or 2 B when they are cast to bf16/fp16 (``frozen_bytes``)
``autocast_weight_copies``    bf16 copies of the trainable weights that autocast caches for the step (2 B each)
``grads``                     one fp32 gradient per trainable parameter (4 B)
``optimizer``                 AdamW: two fp32 moments (8 B); 8-bit AdamW (bitsandbytes): two uint8 moments plus
                              one fp32 absmax per 256-value block (~2.03 B); SGD without momentum: 0
``activations``               tensors autograd keeps for the backward, summed over the layers (see below)
``recompute``                 with gradient checkpointing: the activations of the largest checkpointed layer,
                              rebuilt during the backward (0 without checkpointing)
``workspace``                 without checkpointing: transient tensors of the largest layer (its intermediates in
                              the forward, the gradients of its activations in the backward), taken as its saved
                              size
============================  ==================================================================================

``total`` is the sum: an upper bound of the step's peak (activations are freed during the backward while the
gradients appear, so the measured peak is lower, by up to min(activations, grads)); the CUDA caching allocator,
the CUDA context (~0.5 GB) and framework buffers come on top.

**Activations.** Every layer is walked with its real widths and token counts (per frame: ``h*w`` latent pixels at
its level; the ReferenceNet runs once per sample, the V-Kps guider at image resolution). Per layer the count of
saved tensors is written down in units of "one tensor of the layer's size" (``C * tokens`` elements), from what
PyTorch's autograd formulas keep:

- norms (GroupNorm, LayerNorm) and SiLU/GELU keep their input, whether or not their weights train;
- a linear or convolution keeps its input only when its weight trains (the input gradient needs the weight only);
- ``scaled_dot_product_attention`` (flash / memory-efficient kernels, CPU included) keeps q, k, v and its output
  (plus a per-row log-sum-exp, ignored), never the score matrix;
- the GEGLU feed-forward keeps its 8C projection (the GELU's input is a view of it) and the 4C GELU output;
- reshapes, additions, concatenation, nearest upsampling keep nothing.

So a spatial transformer block keeps 24 units plus 11 when its weights train (ResNet: 2 Cin + 2 C, plus Cin + C;
motion module 24 + 11). A layer before the first trainable one keeps nothing (in the audio+motion stage that is
the part of the first block before its audio attention: ignored, it is small). Motion modules that are frozen
with a zero output projection (image stage) are skipped by the network and keep nothing.

With gradient checkpointing (our denoiser checkpoints every ResNet, spatial transformer and motion module) a layer
keeps only its input, and the backward rebuilds one layer at a time (``recompute``).

:class:`PeakMeter` measures a CPU peak from glibc's allocation counters, used by the test that checks this
arithmetic against a real step at a small size and by ``benchmarks/bench_memory.py``.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

GB = 1e9
GIB = 2**30

#: bytes per element of the saved activations
ACT_BYTES = {"32-true": 4, "bf16-mixed": 2, "16-mixed": 2}

#: optimizer state bytes per trainable parameter
OPTIMIZER_BYTES = {"adamw": 8.0, "adamw8bit": 2.0 + 2 * 4 / 256, "sgd": 0.0}


# ---------------------------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------------------------
def parameter_counts(config: Any) -> dict[str, int]:
    """Parameters per group of :data:`vexpress.models.vexpress_net.PARAMETER_GROUPS` (network built on ``meta``)."""
    import torch

    from vexpress.models.vexpress_net import PARAMETER_GROUPS, VExpressNet, parameter_group

    with torch.device("meta"):
        net = VExpressNet(config)
    counts = {g: 0 for g in PARAMETER_GROUPS}
    for name, p in net.named_parameters():
        counts[parameter_group(name)] += p.numel()
    return counts


def stage_split(counts: Mapping[str, int], trainable: Iterable[str]) -> tuple[int, int]:
    """(trainable, frozen) parameter counts of a stage given by its trainable groups."""
    train = set(trainable)
    n_train = sum(n for g, n in counts.items() if g in train)
    return n_train, sum(counts.values()) - n_train


# ---------------------------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Layer:
    """One layer of the walk: ``elements`` saved for the backward (all samples), group deciding trainability."""

    name: str
    elements: float
    checkpoint_elements: float = 0.0  # kept with gradient checkpointing (the layer's input)
    checkpointed: bool = False


def _transformer_units(train_base: bool, train_ref: bool, train_audio: bool, reference: bool = True) -> float:
    """Saved units of one spatial transformer (GroupNorm, proj_in, block, proj_out) per C*N."""
    units = 1.0  # GroupNorm input
    units += 1 + 4  # norm1 input; self-attention q, k, v, out
    if reference:
        units += 1 + 2  # norm1_5 input; reference attention q, out (k, v belong to the bank)
    units += 1 + 2  # norm2 input; audio attention q, out
    units += 1 + 8 + 4  # norm3 input; GEGLU projection (8C), GELU output (4C)
    if train_base:
        units += 2 + 2 + 1 + 4  # proj_in/proj_out inputs; attn1 to_q/k/v input + to_out input; ff in + net.2 in
    if reference and train_ref:
        units += 2  # attn1_5 to_q input, to_out input
    if train_audio:
        units += 2  # attn2 to_q input, to_out input
    return units


MOTION_UNITS = 24.0
MOTION_TRAIN_UNITS = 11.0


def _resnet_elements(cin: int, cout: int, tokens: int, train: bool) -> float:
    return (2 * cin + 2 * cout + ((cin + cout) if train else 0)) * tokens


def walk_activations(config: Any, height: int, width: int, frames: int, batch: int,
                     trainable: Iterable[str]) -> list[Layer]:
    """Per-layer saved elements for one training forward (see the module docstring for the counting rules)."""
    train = set(trainable)
    unet = config.unet
    ch = list(unet["block_out_channels"])
    layers_per_block = int(unet.get("layers_per_block", 2))
    down = int(config.latent_downscale)
    h, w = height // down, width // down
    n = len(ch)
    base, ref_attn, audio, motion = ("denoiser_base" in train, "reference_attention" in train,
                                     "audio_attention" in train, "motion_modules" in train)
    extra = config.unet_additional_kwargs
    use_motion = bool(extra.get("use_motion_module", True))
    motion_levels = set(extra.get("motion_module_resolutions", (1, 2, 4, 8)))
    # motion modules frozen at zero output (image stage) are skipped by the network
    motion_runs = use_motion and motion
    down_types = unet.get("down_block_types", [])
    up_types = unet.get("up_block_types", [])
    out: list[Layer] = []
    bf = batch * frames

    def tokens(level: int) -> int:
        return math.ceil(h / 2**level) * math.ceil(w / 2**level)

    def add_transformer(name: str, c: int, level: int, reference: bool = True, trainable_base: bool = base,
                        samples: int = bf, train_ref: bool = ref_attn, train_audio: bool = audio) -> None:
        units = _transformer_units(trainable_base, train_ref, train_audio, reference)
        out.append(Layer(name, units * c * tokens(level) * samples, c * tokens(level) * samples, True))

    def add_motion(name: str, c: int, level: int) -> None:
        if motion_runs and 2**level in motion_levels:
            units = MOTION_UNITS + MOTION_TRAIN_UNITS
            out.append(Layer(name, units * c * tokens(level) * bf, c * tokens(level) * bf, True))

    def add_resnet(name: str, cin: int, cout: int, level: int, trainable_base: bool = base,
                   samples: int = bf) -> None:
        out.append(Layer(name, _resnet_elements(cin, cout, tokens(level), trainable_base) * samples,
                         cin * tokens(level) * samples, True))

    # --- denoising UNet ------------------------------------------------------------------------------------------
    skips = [ch[0]]
    c = ch[0]
    for i, kind in enumerate(down_types):
        cout = ch[i]
        for j in range(layers_per_block):
            add_resnet(f"down_blocks.{i}.resnets.{j}", c, cout, i)
            c = cout
            if "CrossAttn" in kind:
                add_transformer(f"down_blocks.{i}.attentions.{j}", c, i)
            add_motion(f"down_blocks.{i}.motion_modules.{j}", c, i)
            skips.append(c)
        if i < n - 1:
            if base:  # the downsampling conv keeps its input
                out.append(Layer(f"down_blocks.{i}.downsamplers", c * tokens(i) * bf))
            skips.append(c)
    add_resnet("mid_block.resnets.0", c, c, n - 1)
    add_transformer("mid_block.attentions.0", c, n - 1)
    if extra.get("motion_module_mid_block", True):
        add_motion("mid_block.motion_modules.0", c, n - 1)
    add_resnet("mid_block.resnets.1", c, c, n - 1)
    rev = list(reversed(ch))
    for i, kind in enumerate(up_types):
        level = n - 1 - i
        cout = rev[i]
        for j in range(layers_per_block + 1):
            skip = skips.pop()
            add_resnet(f"up_blocks.{i}.resnets.{j}", c + skip, cout, level)
            c = cout
            if "CrossAttn" in kind:
                add_transformer(f"up_blocks.{i}.attentions.{j}", c, level)
            add_motion(f"up_blocks.{i}.motion_modules.{j}", c, level)
        if i < n - 1 and base:  # the upsampling conv keeps its (upsampled) input
            out.append(Layer(f"up_blocks.{i}.upsamplers", c * tokens(level - 1) * bf))
    # conv_norm_out (GroupNorm input), SiLU input, conv_out input
    out.append(Layer("conv_norm_out", (2 + (1 if base else 0)) * ch[0] * tokens(0) * bf))

    # --- V-Kps guider at image resolution (only when it trains: its input needs no gradient) --------------------
    if "v_kps_guider" in train:
        g = list(config.v_kps_guider["block_out_channels"])
        pix = height * width
        elems = 3 * pix  # conv_in input
        for k, cg in enumerate(g):
            res = pix / 4**k
            # conv output kept by SiLU + SiLU output kept by the next conv, twice per stage (conv_in/blocks)
            elems += 2 * 2 * cg * res if k < len(g) - 1 else 2 * cg * res
        out.append(Layer("v_kps_guider", elems * bf))

    # --- ReferenceNet (one image per sample; with gradient only when it trains) ---------------------------------
    if "reference_net" in train:
        c = ch[0]
        skips = [ch[0]]
        for i, kind in enumerate(down_types):
            cout = ch[i]
            for j in range(layers_per_block):
                add_resnet(f"reference_net.down_blocks.{i}.resnets.{j}", c, cout, i, True, batch)
                c = cout
                if "CrossAttn" in kind:
                    add_transformer(f"reference_net.down_blocks.{i}.attentions.{j}", c, i, False, True, batch,
                                    False, True)
                skips.append(c)
            if i < n - 1:
                out.append(Layer(f"reference_net.down_blocks.{i}.downsamplers", c * tokens(i) * batch))
                skips.append(c)
        add_resnet("reference_net.mid_block.resnets.0", c, c, n - 1, True, batch)
        add_transformer("reference_net.mid_block.attentions.0", c, n - 1, False, True, batch, False, True)
        add_resnet("reference_net.mid_block.resnets.1", c, c, n - 1, True, batch)
        for i, kind in enumerate(up_types):
            level = n - 1 - i
            cout = rev[i]
            frozen = i == len(up_types) - 1  # up_blocks.3 never trains (its activations still pass gradients)
            for j in range(layers_per_block + 1):
                skip = skips.pop()
                add_resnet(f"reference_net.up_blocks.{i}.resnets.{j}", c + skip, cout, level, not frozen, batch)
                c = cout
                if "CrossAttn" in kind:
                    add_transformer(f"reference_net.up_blocks.{i}.attentions.{j}", c, level, False, not frozen,
                                    batch, False, not frozen)
            if i < n - 1:
                out.append(Layer(f"reference_net.up_blocks.{i}.upsamplers", c * tokens(level - 1) * batch))
    # the reference bank's keys/values used by every frame's reference attention (kept once per sample)
    if "reference_net" in train or "reference_attention" in train:
        bank = 0
        for i, kind in enumerate(down_types):
            if "CrossAttn" in kind:
                bank += layers_per_block * ch[i] * tokens(i)
        for i, kind in enumerate(up_types):
            if "CrossAttn" in kind:
                bank += (layers_per_block + 1) * rev[i] * tokens(n - 1 - i)
        bank += ch[-1] * tokens(n - 1)
        out.append(Layer("reference_bank_kv", 3 * bank * batch))  # bank features + K + V
    return out


# ---------------------------------------------------------------------------------------------------------------
# the estimate
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class MemoryEstimate:
    """Bytes per component of one training step on ONE device (see the module docstring)."""

    stage: str
    frames: int
    batch: int
    height: int
    width: int
    precision: str
    optimizer: str
    checkpointing: bool
    params_trainable_count: int
    params_frozen_count: int
    components: dict[str, float] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list, repr=False)

    @property
    def total(self) -> float:
        return float(sum(self.components.values()))

    def per_frame_activations(self) -> float:
        return self.components["activations"] / max(1, self.frames * self.batch)

    def row(self) -> dict[str, Any]:
        return {"stage": self.stage, "frames": self.frames, "batch": self.batch, "size": f"{self.height}x{self.width}",
                "precision": self.precision, "optimizer": self.optimizer, "checkpointing": self.checkpointing,
                "trainable": self.params_trainable_count, "frozen": self.params_frozen_count,
                **{f"{k}_bytes": int(v) for k, v in self.components.items()}, "total_bytes": int(self.total)}


def estimate_training_memory(
    config: Any,
    trainable: Sequence[str],
    *,
    stage: str = "",
    frames: int = 1,
    batch: int = 1,
    height: int = 512,
    width: int = 512,
    precision: str = "bf16-mixed",
    optimizer: str = "adamw",
    checkpointing: bool = False,
    frozen_bytes: int | None = None,
    counts: Mapping[str, int] | None = None,
) -> MemoryEstimate:
    """Bytes per component of one training step of a stage on one device, without sharding.

    Args:
        config: a :class:`~vexpress.models.VExpressConfig`.
        trainable: the stage's trainable parameter groups (``StageSpec.trainable``).
        frames, batch, height, width: clip shape per device (official: 1 x 8, 20 x 1, 8 x 1 at 512x512).
        precision: Lightning precision: ``32-true``, ``bf16-mixed`` or ``16-mixed`` (fp32 master weights).
        optimizer: ``adamw``, ``adamw8bit`` or ``sgd``.
        checkpointing: gradient checkpointing of the denoiser.
        frozen_bytes: bytes per frozen parameter (default 4; 2 when frozen modules are cast to bf16).
        counts: precomputed :func:`parameter_counts` (saves building the network).
    """
    if precision not in ACT_BYTES:
        raise ValueError(f"precision must be one of {sorted(ACT_BYTES)}, got {precision!r}")
    if optimizer not in OPTIMIZER_BYTES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_BYTES)}, got {optimizer!r}")
    counts = dict(counts) if counts is not None else parameter_counts(config)
    n_train, n_frozen = stage_split(counts, trainable)
    layers = walk_activations(config, height, width, frames, batch, trainable)
    act_bytes = ACT_BYTES[precision]
    if checkpointing:
        kept = sum(la.checkpoint_elements if la.checkpointed else la.elements for la in layers)
        recompute = max((la.elements for la in layers if la.checkpointed), default=0.0)
    else:
        kept = sum(la.elements for la in layers)
        recompute = 0.0
    mixed = precision != "32-true"
    components = {
        "params_trainable": 4.0 * n_train,
        "params_frozen": float(frozen_bytes if frozen_bytes is not None else 4) * n_frozen,
        "autocast_weight_copies": 2.0 * n_train if mixed else 0.0,
        "grads": 4.0 * n_train,
        "optimizer": OPTIMIZER_BYTES[optimizer] * n_train,
        "activations": kept * act_bytes,
        "recompute": recompute * act_bytes,
        # without checkpointing; with it the recompute term is the largest layer's transient
        "workspace": 0.0 if checkpointing else max((la.elements for la in layers), default=0.0) * act_bytes,
    }
    return MemoryEstimate(stage, frames, batch, height, width, precision, optimizer, checkpointing, n_train, n_frozen,
                          components, layers)


#: Lightning strategies and what each shards over ``n`` GPUs
STRATEGIES = ("ddp", "fsdp", "deepspeed_stage_2")


def per_device_bytes(est: MemoryEstimate, strategy: str, n_gpus: int) -> float:
    """Bytes on one GPU when ``n_gpus`` train together with a Lightning strategy (one clip batch per GPU).

    - ``ddp``: everything replicated (gradients as bucket views, as ``conf/trainer/ddp.yaml``); ``n`` does not help.
    - ``fsdp`` (full shard): parameters, gradients, optimizer states / n, plus the largest unsharded unit
      gathered at a time (taken as 1/16 of the denoiser); autocast copies follow the shards.
    - ``deepspeed_stage_2`` (ZeRO-2, bf16): gradients and optimizer states (with the fp32 master copy of the
      trainable weights) / n; the model weights themselves are bf16 (2 B) and replicated; ~0.8 GB of reduce and
      all-gather buckets (Lightning's defaults 2e8 elements each).
    """
    c = est.components
    n = max(1, int(n_gpus))
    act = c["activations"] + c["recompute"] + c["workspace"]
    if strategy == "ddp":
        return est.total
    if strategy == "fsdp":
        state = c["params_trainable"] + c["params_frozen"] + c["grads"] + c["optimizer"] + c["autocast_weight_copies"]
        gathered = (c["params_trainable"] + c["params_frozen"]) / 16
        return state / n + gathered + act
    if strategy == "deepspeed_stage_2":
        weights = 2.0 * (est.params_trainable_count + est.params_frozen_count)
        sharded = (4.0 * est.params_trainable_count + c["grads"] + c["optimizer"]) / n
        return weights + sharded + 0.8e9 + act
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")


def min_gpus(est: MemoryEstimate, strategy: str, capacity_bytes: float, max_gpus: int = 64,
             reserve_bytes: float = 2.0e9) -> int | None:
    """Fewest GPUs (of ``capacity_bytes`` each, ``reserve_bytes`` kept for the CUDA context, allocator slack and
    fragmentation) with which the step fits under ``strategy``; None if it does not fit on ``max_gpus``."""
    for n in range(1, max_gpus + 1):
        if per_device_bytes(est, strategy, n) + reserve_bytes <= capacity_bytes:
            return n
        if strategy == "ddp":
            return None
    return None


# ---------------------------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------------------------
class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def malloc_in_use() -> int | None:
    """Bytes currently allocated through glibc malloc (heap + mmapped chunks); None without glibc >= 2.33."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _Mallinfo2
    info = fn()
    return int(info.uordblks + info.hblkhd)


class PeakMeter:
    """Peak of the bytes allocated by this process between ``start()`` and ``stop()``, sampled after every torch
    operator (a ``TorchDispatchMode``) and at module boundaries, from glibc's counters. CPU tensors only.

    ``peak - baseline`` is the working memory of the measured code; ``where`` names the module and operator at the
    peak. Needs glibc (Linux); :attr:`available` is False elsewhere.
    """

    def __init__(self, min_bytes: int = 1 << 18) -> None:
        self.available = malloc_in_use() is not None
        self.min_bytes = int(min_bytes)  # sample after operators that return at least this much (and every 64th)
        self._count = 0
        self.baseline = 0
        self.peak = 0
        self.where = ""
        self._mode = None
        self._stack: list[str] = []
        self._handles: list[Any] = []

    def sample(self, label: str = "") -> None:
        now = malloc_in_use() or 0
        if now > self.peak:
            self.peak = now
            self.where = f"{self._stack[-1] if self._stack else '-'} :: {label}"

    def __enter__(self) -> "PeakMeter":
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        meter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                meter._count += 1
                outs = out if isinstance(out, (tuple, list)) else (out,)
                size = sum(t.nbytes for t in outs if isinstance(t, torch.Tensor))
                if size >= meter.min_bytes or meter._count % 64 == 0:
                    meter.sample(str(func))
                return out

        def pre(module, _args):
            meter._stack.append(type(module).__name__)

        def post(module, _args, _out):
            meter.sample("module end")
            if meter._stack:
                meter._stack.pop()

        self._handles = [torch.nn.modules.module.register_module_forward_pre_hook(pre),
                         torch.nn.modules.module.register_module_forward_hook(post)]
        self.baseline = self.peak = malloc_in_use() or 0
        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sample("end")
        if self._mode is not None:
            self._mode.__exit__(*exc)
            self._mode = None
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def working_bytes(self) -> int:
        return max(0, self.peak - self.baseline)


def format_bytes(n: float) -> str:
    return f"{n / GB:.2f} GB"
