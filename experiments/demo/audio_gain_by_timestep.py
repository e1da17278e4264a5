"""At which diffusion timesteps does a demo model's audio help? Lip-region loss with and without the audio, per t.

For each stage export given, on a fixed batch of the demo's *training* clips (posterior means from the latent cache,
fixed noise per timestep), the training target (v-prediction) is compared with the prediction made with the correct
audio and with the audio dropped (the official unconditional audio path), inside the lip mask. The difference is
how much the audio lowers the loss at that timestep: where it is near zero, a training draw teaches the audio path
almost nothing. This is the evidence behind the audio+motion stage's ``timestep_bias`` candidate (sweep 11,
``exploration_2026-12-06e.md``). Training clips only: no held-out clip is read.

    .venv/bin/python experiments/demo/audio_gain_by_timestep.py \\
        demo_output/runs/recipe/stages/1_audio_motion/export demo_output/runs/recipe/stages/2_joint/export
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from vexpress.demo.run import compose_train, train_overrides
    from vexpress.errors import InputError
    from vexpress.models.conditioning import DropMask
    from vexpress.models.weights import load_export
    from vexpress.training.losses import min_snr_weights
    from vexpress.training.noise import DiffusionTargets
    from vexpress.training.rng import generator_for
    from vexpress.utils.paths import CONF_DIR

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("exports", nargs="+", help="stage export folders (official layout)")
    ap.add_argument("--latent-cache", default=None,
                    help="the demo's latent cache folder (default: the newest under .cache/vexpress/latents)")
    ap.add_argument("--clips", type=int, default=8, help="training clips in the batch")
    ap.add_argument("--frames", type=int, default=4, help="frames per clip (the audio stages train on 4)")
    ap.add_argument("--timesteps", default="50,150,250,350,450,550,650,750,850,950")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path.cwd()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("demo", overrides=[f"paths.root_dir={root}", "output_dir=/tmp/unused"])
        tcfg = compose_train(train_overrides(cfg, next(iter(cfg.runs))) + [f"paths.root_dir={root}"])
    if args.latent_cache:
        cache = Path(args.latent_cache)
    else:
        caches = sorted((root / ".cache/vexpress/latents").glob("*"), key=lambda p: p.stat().st_mtime)
        if not caches:
            raise InputError("no latent cache under .cache/vexpress/latents; run make demo first or pass "
                             "--latent-cache")
        cache = caches[-1]
    dm = instantiate(tcfg.data, num_frames=args.frames, batch_size=args.clips, latent_cache=str(cache),
                     sample_latents=False, num_workers=0, persistent_workers=False)
    dm.setup("fit")
    ds = dm.train_dataset
    step = max(1, len(ds) // args.clips)
    batch = torch.utils.data.default_collate([ds[i * step] for i in range(args.clips)])
    targets = DiffusionTargets(instantiate(tcfg.noise_scheduler))
    x0 = batch["target_latents"].float()
    mask = batch["lip_masks"].float().expand_as(x0)
    n = x0.shape[0]
    cond = dict(ref_latents=batch["reference_latents"].float(), audio_windows=batch["audio_windows"],
                kps_images=batch["kps_images"])
    no_audio = DropMask.none(n, "cpu")
    no_audio.audio[:] = True
    print(f"latent cache {cache.name}; {n} training clips x {args.frames} frames; lip mask covers "
          f"{batch['lip_masks'].float().mean().item():.3f} of the latent")
    for export in args.exports:
        net = load_export(export, load_vae=False).net.eval()
        print(f"\n{export}\n   t | lip MSE, audio dropped | with audio | gain | min-SNR weight")
        for t in (int(v) for v in args.timesteps.split(",")):
            noise = torch.randn(x0.shape, generator=generator_for(99, "audio-gain", t))
            tt = torch.full((n,), t, dtype=torch.long)
            noisy, target = targets.add_noise(x0, noise, tt), targets.target(x0, noise, tt)
            with torch.no_grad():
                with_audio = net(noisy, tt, drop=DropMask.none(n, "cpu"), **cond)
                without = net(noisy, tt, drop=no_audio, **cond)
            l1 = float((((with_audio - target) ** 2) * mask).sum() / mask.sum())
            l0 = float((((without - target) ** 2) * mask).sum() / mask.sum())
            w = float(min_snr_weights(targets.snr(tt[:1]), float(tcfg.model.snr_gamma), targets.v_prediction)[0])
            print(f"{t:4d} | {l0:.4f} | {l1:.4f} | {l0 - l1:+.4f} | {w:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
