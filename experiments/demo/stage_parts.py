"""Which part of a stage's update moves the demo's metrics? Put each parameter group back, one at a time, and score.

Given an earlier stage export and a later one of the same run (for example the audio+motion export and the joint
export), every parameter group of ``VExpressNet.parameter_groups()`` whose tensors differ between the two is copied
from the earlier export into the later one, and that hybrid is scored with ``make demo``'s evaluation (correct and
shuffled audio, identity, pose, the VAE floor) on held-out clips. The exploration clips 0-7 are the default: this
is a diagnostic for choosing what to change, so it never reads a report clip unless told to. The evidence behind
sweep 12 (``exploration_2026-12-06f.md``): the joint stage's identity cost sits in its update of the denoiser's 2D
layers.

    .venv/bin/python experiments/demo/stage_parts.py \\
        demo_output/runs/recipe/stages/1_audio_motion/export demo_output/runs/recipe/stages/2_joint/export
    # other vexpress-demo overrides after --, e.g. -- train_overrides='["seed=8"]' paths.cache_dir=...
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

KEYS = ("mouth_err_correct", "ratio", "identity_err", "pose_err")


def differing_groups(earlier: torch.nn.Module, later: torch.nn.Module) -> dict[str, list[str]]:
    """Parameter group -> its parameter names, for the groups whose tensors differ between the two networks."""
    a, b = dict(earlier.named_parameters()), dict(later.named_parameters())
    out = {}
    for group, names in later.parameter_groups().items():
        if names and any(not torch.equal(a[n], b[n]) for n in names):
            out[group] = names
    return out


def main(argv: list[str] | None = None) -> int:
    from hydra import compose, initialize_config_dir

    from vexpress.data.records import load_manifest
    from vexpress.demo.distill import heldout_records
    from vexpress.demo.evaluate import evaluate_export, evaluate_vae_floor
    from vexpress.demo.prepare import ensure_data, foundation_vae
    from vexpress.demo.run import compose_train, train_overrides
    from vexpress.evaluation.synthetic import shuffled_audio_sources
    from vexpress.models.weights import load_export, save_export
    from vexpress.utils.paths import CONF_DIR

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("earlier", help="the earlier stage's export folder (the donor of each group)")
    ap.add_argument("later", help="the later stage's export folder (the base of every hybrid)")
    ap.add_argument("--first-clip", type=int, default=0, help="first held-out clip (0-7 serve exploration)")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="vexpress-demo overrides (after --)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path.cwd()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("demo", overrides=[f"paths.root_dir={root}", "output_dir=/tmp/unused",
                                         f"eval.first_clip={args.first_clip}", f"eval.clips={args.clips}",
                                         *args.overrides])
        tcfg = compose_train(train_overrides(cfg, next(iter(cfg.runs))) + [f"paths.root_dir={root}"])
    held = load_manifest(ensure_data(tcfg.data), split=tcfg.data.val_split)
    records = heldout_records(held, cfg.eval, {})
    shuffled = shuffled_audio_sources(records, seed=int(cfg.eval.shuffle_seed))
    vae, vae_info = foundation_vae(cfg.foundation)
    floor = evaluate_vae_floor(vae, records, cfg.eval)

    earlier, later = load_export(args.earlier, load_vae=False), load_export(args.later)
    groups = differing_groups(earlier.net, later.net)
    rows: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="stage_parts_") as tmp:
        targets = [("earlier export", Path(args.earlier)), ("later export", Path(args.later))]
        donor = dict(earlier.net.named_parameters())
        for group, names in groups.items():
            hybrid = load_export(args.later)
            with torch.no_grad():
                own = dict(hybrid.net.named_parameters())
                for n in names:
                    own[n].copy_(donor[n])
            path = save_export(Path(tmp) / group, hybrid.net, hybrid.vae, audio_encoder=hybrid.audio_encoder)
            targets.append((f"later, {group} from earlier", path))
        for i, (label, export) in enumerate(targets):
            res = evaluate_export(export, f"part{i}", records, shuffled, cfg.eval, Path(tmp) / f"eval{i}",
                                  include_gt=False, vae=vae_info["dir"])
            rows.append((label, res))
    ids = sorted(r.id for r in records)
    print(f"\n{len(records)} held-out clips from {args.first_clip} ({ids[0]} .. {ids[-1]}), {int(cfg.eval.frames)} "
          f"frames each; groups that differ: {', '.join(groups) or 'none'}")
    print("| model | mouth err | shuffled / correct | identity | pose (px) |\n|---|---|---|---|---|")
    for label, res in rows:
        print(f"| {label} | {res['mouth_err_correct']:.4f} | {res['ratio']:.2f} | {res['identity_err']:.4f} | "
              f"{res['pose_err']:.3f} |")
    print(f"| VAE floor | {floor['mouth_err']:.4f} | | {floor['identity_err']:.4f} | {floor['pose_err']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
