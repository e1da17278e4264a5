"""The official-release route: official-layout weight files + a local VAE folder + a local wav2vec2 folder.

Uses the official-code dev weights of shared/parity/dev (a reduced SD1.5-shaped network in the official key
layout), a tiny diffusers VAE saved with ``save_pretrained`` and a tiny random wav2vec2 saved the same way (768-d
like wav2vec2-base), so the whole ``from_official`` path runs offline; and the official ``kps.pth`` sample.
"""

from __future__ import annotations

import numpy as np
import pytest

from vexpress.data.video import probe_video


@pytest.fixture(scope="module")
def local_folders(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from tests.helpers.tiny import tiny_vae

    root = tmp_path_factory.mktemp("pretrained")
    tiny_vae().save_pretrained(root / "sd-vae-ft-mse")
    cfg = Wav2Vec2Config(hidden_size=768, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(cfg).save_pretrained(root / "wav2vec2-base-960h")
    return root


@pytest.mark.slow
def test_from_official_files(parity_path, local_folders, sample_ref, wav_file, tmp_path):
    from vexpress.models import VExpressConfig
    from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

    pipe = VExpressPipeline.from_official(
        parity_path, vae=local_folders / "sd-vae-ft-mse", audio_encoder=local_folders / "wav2vec2-base-960h",
        config=VExpressConfig.from_json(parity_path / "config.json"), device="cpu")
    assert type(pipe.audio_encoder).__name__ == "Wav2Vec2Encoder"
    out = pipe(sample_ref, wav_file(0.3), height=128, width=128, fps=30, num_inference_steps=1, progress=False,
               output_path=tmp_path / "official.mp4")
    info = probe_video(out.path)
    assert info.num_frames == 9 and (info.width, info.height) == (128, 128)


def test_official_kps_file_as_driving(sample_ref, wav_file):
    """The official kps.pth (512x512 coordinates) with no_retarget: the photo keeps its framing (crop auto)."""
    from vexpress.kps.io import load_kps
    from vexpress.pipelines.vexpress_pipeline import prepare_inputs
    from vexpress.utils.paths import samples_dir

    kps_file = samples_dir() / "AOC" / "kps.pth"
    inputs = prepare_inputs(sample_ref, wav_file(1.0), driving=kps_file, retarget="no_retarget", height=64,
                            width=64, fps=25)
    assert inputs.crop == "none" and inputs.num_frames == 25
    raw = load_kps(kps_file).numpy()
    assert np.allclose(inputs.kps, raw[:25] * (64 / 512), atol=1e-4)  # one keypoint set per frame, rescaled
