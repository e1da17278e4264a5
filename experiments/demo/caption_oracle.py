"""What can the foundation draw when it is told exactly how the mouth looks? An upper bound for the mouth goal.

The embedded foundation's cross-attention learned captions: each frame's mouth opening, width and vowel
(``vexpress.data.captions``) through a frozen caption encoder (``experiments/foundation/README.md``). This script
samples the untouched foundation with the demo's shipped sampler on the exploration clips, its cross-attention fed
either the truth's own captions (and, for the control, the shuffled partner's) or nothing, and scores the result
as the demo does (mouth error, shuffled / correct ratio, identity, pose). If the captioned mouth is near the VAE
floor, the networks can draw the mouth and sample it in 10 steps: what the demo loses is on the way from the audio
to the cross-attention. No report clip (8-31) is read.

``--mode heard`` feeds captions *decoded from the audio* instead of the truth's: the foundation's speech encoder's
own training heads (phone class and voicing level per 20 ms row, read from the very features the demo's audio
projection reads) turned into each frame's opening, width and vowel by the synthetic world's rule
(``vexpress.synthetic.speech.mouth_track``). That is the best an audio path can do with what the encoder hears: if
its mouth error is near the truth's captions', the encoder's features are not the limit, and what is lost is the
projection's and attention's learning; if it is far above, no training of the audio path can reach the truth's.

    .venv/bin/python experiments/demo/caption_oracle.py [--foundation DIR] [--mode captions|heard|silent] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from _exploration import EXPLORATION_CLIPS


class CaptionTokens:
    """Stands where the pipeline's audio condition stands: per-frame caption tokens, sliced per window."""

    def __init__(self, tokens: torch.Tensor):
        self.tokens, self.num_frames = tokens, int(tokens.shape[0])

    def window(self, frames: range) -> torch.Tensor:
        return self.tokens[frames.start:frames.stop][None]


def heard_captions(features: np.ndarray, encoder, num_frames: int, fps: float, rows_per_second: float) -> np.ndarray:
    """(num_frames, 3) captions decoded from an utterance's encoder features (N, D) by the encoder's heads
    (``encoder``: the ``PhoneticNet`` that made them).

    Row ``j`` stands for the samples around ``j / rows_per_second`` s (a centred STFT frame). The heads' voicing level
    and level-weighted vowel probabilities are spread back over those samples and handed to the synthetic world's own
    rule (``vexpress.synthetic.speech.mouth_track``: a frame's level is the mean over its samples, its vowel the
    loudest), as if they were the synthesiser's plan."""
    from vexpress.data.captions import captions_from_mouth
    from vexpress.synthetic.speech import SAMPLE_RATE, mouth_track

    with torch.no_grad():
        logits, level = encoder.read_heads(torch.as_tensor(features, dtype=torch.float32))
    level = level.numpy()
    vowel_prob = torch.softmax(logits, dim=-1)[:, 1:].numpy()  # class 0: silence or consonant noise
    hop = SAMPLE_RATE / rows_per_second
    samples = int(round(num_frames / fps * SAMPLE_RATE))
    row = np.clip(np.floor(np.arange(samples) / hop + 0.5).astype(np.int64), 0, level.shape[0] - 1)
    mouth, vowel = mouth_track(level[row], (level[row, None] * vowel_prob[row]).T, num_frames, fps)
    return captions_from_mouth(mouth, vowel)


def main(argv: list[str] | None = None) -> int:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from vexpress.audio.encoders import build_audio_encoder
    from vexpress.data.captions import frame_captions
    from vexpress.data.records import load_manifest
    from vexpress.demo.evaluate import evaluate_pipeline
    from vexpress.demo.prepare import ensure_data
    from vexpress.demo.run import compose_train, train_overrides
    from vexpress.evaluation.synthetic import shuffled_audio_sources
    from vexpress.models.config import VExpressConfig
    from vexpress.models.vexpress_net import VExpressNet
    from vexpress.models.weights import init_from_foundation, load_foundation_vae, read_foundation_manifest
    from vexpress.pipelines import VExpressPipeline
    from vexpress.utils.paths import CONF_DIR

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--foundation", default="experiments/foundation/weights")
    ap.add_argument("--mode", choices=("captions", "heard", "silent"), default="captions")
    ap.add_argument("--out", default=None, help="folder for the per-clip table (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    foundation = Path(args.foundation).resolve()
    manifest = read_foundation_manifest(foundation)
    if "caption_encoder" not in manifest:
        print(f"error: {foundation} was pretrained without captions; nothing to feed its cross-attention",
              file=sys.stderr)
        return 2

    root = Path.cwd()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("demo", overrides=[f"paths.root_dir={root}", "output_dir=/tmp/unused", f"foundation={foundation}",
                                         "eval.first_clip=0", f"eval.clips={EXPLORATION_CLIPS}"])
        tcfg = compose_train(train_overrides(cfg, next(iter(cfg.runs))) + [f"paths.root_dir={root}"])
    held = load_manifest(Path(ensure_data(tcfg.data)), split=tcfg.data.val_split)
    records = held[:EXPLORATION_CLIPS]
    shuffled = shuffled_audio_sources(records, seed=int(cfg.eval.shuffle_seed))

    net = VExpressNet(VExpressConfig.from_dict(manifest["network"]))
    init_from_foundation(net, foundation)  # the motion modules it lacks start as identity (zero output)
    pipe = VExpressPipeline(net, vae=load_foundation_vae(foundation),
                            audio_encoder=build_audio_encoder(dict(cfg.eval.audio_encoder)),
                            sampler=str(cfg.eval.sampler), device="cpu", dtype="fp32")
    captioner = instantiate(manifest["caption_encoder"])
    encoder, heard_mae = None, []
    if args.mode == "heard":
        from vexpress.audio.phonetic import WEIGHTS, PhoneticNet, load_phonetic_weights, read_phonetic_config

        encoder_dir = Path(str(cfg.eval.audio_encoder.path))
        encoder_cfg = read_phonetic_config(encoder_dir)
        rows_per_second = float(encoder_cfg["front_end"]["rate_hz"])
        encoder = PhoneticNet(**encoder_cfg["network"]).eval()
        load_phonetic_weights(encoder, encoder_dir / WEIGHTS)  # strict: the features' own encoder

    def captions_of(pipe, record, audio_record) -> None:  # noqa: ARG001 - the pipeline hears the audio clip's captions
        def encode(audio, num_frames, features=False):  # noqa: ARG001
            if args.mode == "silent":
                return None
            truth = frame_captions(audio_record, np.arange(num_frames))
            if encoder is not None:
                heard = heard_captions(np.asarray(audio_record.audio_features, np.float32), encoder, num_frames,
                                       float(audio_record.fps), rows_per_second)
                heard_mae.append(np.abs(heard - truth).mean(0))
                truth = heard
            values = torch.from_numpy(truth)
            return CaptionTokens(captioner(values).to(pipe.dtype))
        pipe.encode_audio = encode

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="caption_oracle."))
    r = evaluate_pipeline(pipe, f"foundation [{args.mode}]", records, shuffled, cfg.eval, out, include_gt=False,
                          before_clip=captions_of)
    r.pop("per_clip")
    if heard_mae:  # how far the decoded captions are from the truth's (mean absolute error per attribute)
        r["heard_caption_mae"] = dict(zip(("opening", "width", "vowel"), np.mean(heard_mae, 0).round(4).tolist()))
    print(json.dumps({"foundation": str(foundation), "mode": args.mode, **r}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
