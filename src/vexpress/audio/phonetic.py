"""A small learned speech encoder: the synthetic world's wav2vec2-base-960h.

V-Express hears speech through a frozen ``wav2vec2-base-960h``: a speech model pretrained on hundreds of hours and
fine-tuned for recognition, whose hidden states say which phone sounds when. The demo's model heard raw log-mel
bands instead, so its audio path had to learn speech recognition from 96 seconds of training audio inside a few CPU
minutes, a task the real method never faces.

:class:`~vexpress.audio.encoders.PhoneticEncoder` is the analogue. A fixed log-mel front end feeds
:class:`PhoneticNet`, a few 1-D convolutions trained once on the foundation's pretraining split (speakers and
utterances never used by the demo; :func:`vexpress.demo.foundation.fit_audio_encoder`). The targets are speech
content only, from the synthesiser's own plan (:func:`vexpress.synthetic.speech.phonetic_targets`): the phone
class of each 20 ms row (silence or one of the vowels) and its voicing level. They are not the mouth. The
encoder's output, a LayerNorm'd hidden layer as wav2vec2's ``last_hidden_state`` is, then conditions the denoiser
through the audio projection, frozen, at the same 50 rows per second.

A folder holds ``phonetic_encoder.safetensors`` (float32) and ``config.json`` (``format``, the network shape,
the front end, and how it was trained); :func:`read_phonetic_config` and :func:`load_phonetic_weights` read it
strictly.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from vexpress.errors import InputError, WeightsError

FORMAT = "vexpress-phonetic-encoder"
CONFIG = "config.json"
WEIGHTS = "phonetic_encoder.safetensors"
#: phone classes: 0 silence / consonant noise, then the synthesiser's vowels in order
NUM_PHONES = 6


class PhoneticNet(nn.Module):
    """log-mel rows (B, N, n_mels) -> features (B, N, dim); ``heads`` reads phone logits and the voicing level."""

    def __init__(self, n_mels: int = 80, hidden: int = 128, dim: int = 80, kernel: int = 5, layers: int = 3,
                 phones: int = NUM_PHONES):
        super().__init__()
        if kernel % 2 != 1 or layers < 1:
            raise InputError("PhoneticNet needs an odd kernel and at least one layer")
        self.shape = {"n_mels": n_mels, "hidden": hidden, "dim": dim, "kernel": kernel, "layers": layers,
                      "phones": phones}
        convs: list[nn.Module] = []
        width = n_mels
        for _ in range(layers):
            convs += [nn.Conv1d(width, hidden, kernel, padding=kernel // 2), nn.GELU()]
            width = hidden
        convs.append(nn.Conv1d(hidden, dim, 1))
        self.body = nn.Sequential(*convs)
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.Linear(dim, phones + 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.norm(self.body(mel.transpose(1, 2)).transpose(1, 2))

    def predict(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features, phone logits (B, N, phones), voicing level (B, N) in [0, 1])."""
        feats = self(mel)
        return (feats, *self.read_heads(feats))

    def read_heads(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(phone logits (..., phones), voicing level (...) in [0, 1]) from features (..., dim), e.g. stored ones."""
        out = self.heads(feats)
        return out[..., :-1], torch.sigmoid(out[..., -1])


def read_phonetic_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a phonetic encoder folder, checked."""
    cfg_path = Path(path) / CONFIG
    if not cfg_path.is_file():
        raise WeightsError(f"{path} is not a phonetic encoder folder (no {CONFIG}); run vexpress-foundation or set "
                           "audio_encoder.path to the folder it wrote (experiments/foundation/weights/audio_encoder)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != FORMAT:
        raise WeightsError(f"{cfg_path} is not a phonetic encoder config (format={cfg.get('format')!r})")
    return cfg


def load_phonetic_weights(net: PhoneticNet, path: Path) -> None:
    """Load safetensors ``path`` into ``net``, strictly (same keys, same shapes)."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsError(f"phonetic encoder weights {path} are missing; rerun vexpress-foundation")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise WeightsError(f"phonetic encoder weights {path} cannot be read ({exc}); rerun vexpress-foundation") \
            from None
    own = net.state_dict()
    wrong = sorted(set(own) ^ set(tensors)) or sorted(k for k in own if own[k].shape != tensors[k].shape)
    if wrong:
        raise WeightsError(f"phonetic encoder weights {path} do not match its config.json (first: {wrong[0]}); "
                           "rerun vexpress-foundation")
    net.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)


def save_phonetic_encoder(directory: str | os.PathLike, net: PhoneticNet, front_end: Mapping[str, Any],
                          info: Mapping[str, Any]) -> Path:
    """Write ``directory`` (weights + ``config.json``) atomically; ``info`` records how it was trained."""
    from safetensors.torch import save_file

    from vexpress.utils.io import atomic_dir

    with atomic_dir(directory) as tmp:
        save_file({k: v.detach().float().contiguous() for k, v in net.state_dict().items()}, str(tmp / WEIGHTS))
        cfg = {"format": FORMAT, "version": 1, "network": dict(net.shape), "front_end": dict(front_end),
               **dict(info)}
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2, default=str) + "\n")
    return Path(directory)


def train_phonetic_net(data: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], steps: int = 1500,
                       batch_size: int = 32, lr: float = 2e-3, seed: int = 0, level_weight: float = 5.0,
                       network: Mapping[str, Any] | None = None, heldout: int = 0,
                       log_every: int = 0) -> tuple[PhoneticNet, dict[str, Any]]:
    """Fit a :class:`PhoneticNet` to phone classes (cross-entropy) and voicing levels (L1 x ``level_weight``) of
    equal-length utterances (the last ``heldout`` are kept out and scored). AdamW with a cosine decay; float32."""
    if len(data) <= heldout or steps < 1:
        raise InputError(f"need more than {heldout} utterances and at least one step to train the phonetic encoder")
    lengths = {int(m.shape[0]) for m, _, _ in data}
    if len(lengths) != 1:
        raise InputError(f"the phonetic encoder trains on utterances of one length, got {sorted(lengths)} rows")
    mel = torch.stack([m for m, _, _ in data])
    level = torch.stack([v for _, v, _ in data])
    phone = torch.stack([p for _, _, p in data])
    n_train = len(data) - heldout
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        net = PhoneticNet(n_mels=int(mel.shape[-1]), **dict(network or {}))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-2)

    def factor(s: int) -> float:  # 50 warm-up steps, then a cosine decay to 5 %
        return min(1.0, (s + 1) / 50) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    curve = []
    t0 = time.perf_counter()
    net.train()
    for step in range(steps):
        idx = torch.randint(0, n_train, (min(batch_size, n_train),), generator=gen)
        _, logits, lvl = net.predict(mel[idx])
        ce = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), phone[idx].reshape(-1))
        l1 = (lvl - level[idx]).abs().mean()
        loss = ce + level_weight * l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            curve.append({"step": step, "loss": loss.item(), "phone_ce": ce.item(), "level_l1": l1.item()})
    net.eval()
    record: dict[str, Any] = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                              "level_weight": level_weight, "train_utterances": n_train,
                              "seconds": round(time.perf_counter() - t0, 1), "curve": curve}
    if heldout:
        record["heldout"] = score_phonetic_net(net, mel[n_train:], level[n_train:], phone[n_train:])
    record["train"] = score_phonetic_net(net, mel[:n_train], level[:n_train], phone[:n_train])
    return net, record


@torch.no_grad()
def score_phonetic_net(net: PhoneticNet, mel: torch.Tensor, level: torch.Tensor, phone: torch.Tensor
                       ) -> dict[str, float]:
    """Phone accuracy (all rows and voiced rows) and voicing-level MAE."""
    _, logits, lvl = net.predict(mel)
    pred = logits.argmax(-1)
    voiced = phone > 0
    return {"phone_acc": float((pred == phone).float().mean()),
            "vowel_acc_voiced": float((pred[voiced] == phone[voiced]).float().mean()) if voiced.any() else float("nan"),
            "level_mae": float((lvl - level).abs().mean()), "utterances": int(mel.shape[0])}
