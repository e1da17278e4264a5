"""At the SD1.5 config, each training stage trains exactly the official parameters (counts from the spec).

The 2.25 B-parameter network is built on the ``meta`` device (shapes only), put into each stage with the stage's
own YAML (``conf/stage/*.yaml``) and counted. The official counts are derived from the spec's module totals
(§1.4, counted by running the official modules) and the official trainability rules (§4.1, §4.2); ReferenceNet
``up_blocks.3`` (frozen in every stage) is counted on diffusers' own SD1.5 ``UNet2DConditionModel``.
The one-step training tests at this size are in ``tests/training/test_sd15_step.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vexpress.models import VExpressConfig, VExpressNet
from vexpress.training.stages import StageSpec, apply_stage, check_trainable

ROOT = Path(__file__).resolve().parents[2]

#: Official parameter totals (spec §1.4 table)
REFERENCE_NET = 859_520_324
DENOISING_UNET = 1_362_329_284
MOTION_MODULES = 453_209_280
AUDIO_ATTENTION = 43_987_520  # attn2 + norm2 of the 16 spatial blocks
REFERENCE_ATTENTION = 49_599_040  # attn1_5 + norm1_5
GUIDER = 1_086_480
AUDIO_PROJECTION = 29_524_224
TOTAL = REFERENCE_NET + DENOISING_UNET + GUIDER + AUDIO_PROJECTION


def reference_up3_params() -> int:
    """Parameters of ``up_blocks.3`` of diffusers' SD1.5 UNet (frozen in every official stage, spec §1.3)."""
    from diffusers import UNet2DConditionModel

    from vexpress.models.config import SD15_UNET_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    return sum(p.numel() for p in unet.up_blocks[3].parameters())


def official_split(stage: str) -> tuple[int, int]:
    """(trainable, frozen) parameters of the official stage (spec §4.2 "Trainable" row)."""
    up3 = reference_up3_params()
    if stage == "image":  # ReferenceNet minus up_blocks.3; UNet minus motion modules and audio attention; guider
        trainable = (REFERENCE_NET - up3) + (DENOISING_UNET - MOTION_MODULES - AUDIO_ATTENTION) + GUIDER
    elif stage == "audio_motion":  # audio projection, motion modules, audio attention
        trainable = AUDIO_PROJECTION + MOTION_MODULES + AUDIO_ATTENTION
    elif stage == "joint":  # everything but ReferenceNet up_blocks.3
        trainable = TOTAL - up3
    else:
        raise KeyError(stage)
    return trainable, TOTAL - trainable


def load_stage(name: str) -> StageSpec:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "stage" / f"{name}.yaml"), resolve=True)
    cfg.pop("_target_", None)
    return StageSpec(**cfg)


@pytest.fixture(scope="module")
def meta_net():
    with torch.device("meta"):
        return VExpressNet(VExpressConfig.sd15())


def test_total_equals_the_official_modules(meta_net):
    assert sum(p.numel() for p in meta_net.parameters()) == TOTAL == 2_252_460_312
    groups = meta_net.parameter_groups()
    params = dict(meta_net.named_parameters())
    count = {g: sum(params[n].numel() for n in names) for g, names in groups.items()}
    assert count["motion_modules"] == MOTION_MODULES
    assert count["audio_attention"] == AUDIO_ATTENTION
    assert count["reference_attention"] == REFERENCE_ATTENTION
    assert count["reference_net_frozen"] == reference_up3_params()


@pytest.mark.parametrize("stage", ["image", "audio_motion", "joint"])
def test_stage_trains_the_official_parameters(meta_net, stage):
    spec = load_stage(stage)
    spec.zero_init_at_start = False  # zeroing meta tensors is meaningless; counts do not depend on it
    report = apply_stage(meta_net, spec)
    check_trainable(meta_net, spec)
    assert (report.num_trainable, report.num_frozen) == official_split(stage)


def test_memory_arithmetic_counts_the_same_parameters():
    from vexpress.training.memory import estimate_training_memory, parameter_counts

    cfg = VExpressConfig.sd15()
    counts = parameter_counts(cfg)
    for stage in ("image", "audio_motion", "joint"):
        spec = load_stage(stage)
        est = estimate_training_memory(cfg, spec.trainable, frames=spec.num_frames, counts=counts, optimizer="adamw",
                                       precision="bf16-mixed", checkpointing=spec.gradient_checkpointing)
        n_train, n_frozen = official_split(stage)
        assert (est.params_trainable_count, est.params_frozen_count) == (n_train, n_frozen)
        c = est.components
        assert c["params_trainable"] == 4 * n_train and c["grads"] == 4 * n_train
        assert c["optimizer"] == 8 * n_train and c["params_frozen"] == 4 * n_frozen
        assert c["activations"] > 0
