"""How well can the demo's audio features alone say how far the mouth is open? A bound for the mouth goal.

A generator that draws the mouth from the audio cannot be expected to beat a regressor that predicts the synthetic
truth's mouth opening directly from the same audio window, fitted on the same training clips. This script fits two
(ridge regression and a two-layer MLP, L1 loss) from each frame's audio window (the demo's audio features, windowed
as the model sees them: ``vexpress.audio.windows.audio_windows``) to the truth's opening, on the demo's 48 training
clips, and scores them on the exploration clips 0-7 (all frames, and the first 16 frames the report scores).
No report clip (8-31) is read.

With ``--export DIR`` (repeatable) the same regressors read a trained export's audio tokens instead (its audio
projection applied to the same windows): how much of the mouth opening the tokens that the cross-attention hears
still carry, against the bound from the raw windows.

``--eval-data ROOT`` scores another synthetic set's held-out split instead (an exploration set of its own, all its
clips: ``conf/demo.yaml`` ``exploration``, the ``eval_root`` of an ``explore.py`` report); ``--train-data ROOT`` fits
on another set's training split, ``--train-clips N`` on the first N training clips: how the bound moves with the
amount of training speech; ``--num-pad P`` widens the raw window to +-P frames (the model hears +-2): how much of
the opening lies outside what one frame's window hears.

``--generated MOUTH.json`` (``mouth_frames.py --floor --out`` of a model on the same held-out clips) sets the first
MLP's per-frame predictions beside the model's generated openings: whether the generated mouth goes wrong where the
audio is ambiguous (where the regressor is wrong too) or where the audio is clear.

With ``--projection-depths 1,2,4`` it also fits the tiny model's audio projection itself (``VExpressConfig.tiny``'s
geometry at each depth, plus a linear head on its tokens) directly on the opening: whether the projection can
carry what the audio allows, at each depth and init seed.

    .venv/bin/python experiments/demo/audio_mouth_bound.py [--data <synthetic root>] [--export DIR ...]
        [--projection-depths 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from _exploration import EXPLORATION_CLIPS


def windows_and_openings(records, frames: int | None = None, net=None, flatten: bool = True, num_pad: int = 2):
    """Per frame: the audio window as the model sees it (or, given ``net``, its projected audio tokens), and the
    truth's mouth opening; numpy arrays with each window flattened, or (``flatten=False``) float tensors."""
    from vexpress.audio.windows import audio_windows

    xs, ys = [], []
    for rec in records:
        truth = np.asarray(rec.gt_mouth, np.float32)[:, 0]
        n = len(truth) if frames is None else min(frames, len(truth))
        feats = torch.as_tensor(np.asarray(rec.audio_features, np.float32))
        if net is None:
            x = audio_windows(feats, len(truth), num_pad)[:n]
        else:
            with torch.no_grad():
                x = net.encode_audio(audio_windows(feats, len(truth), net.config.num_padding_audio_frames)[:n][None])[0]
        xs.append(x.reshape(n, -1).numpy() if flatten else x.float())
        ys.append(truth[:n])
    if not flatten:
        return torch.cat(xs), torch.from_numpy(np.concatenate(ys))
    return np.concatenate(xs), np.concatenate(ys)


def demo_data_root() -> Path:
    """The synthetic benchmark of ``conf/demo.yaml`` (the demo's data), built if absent."""
    from hydra import compose, initialize_config_dir

    from vexpress.demo.prepare import ensure_data
    from vexpress.demo.run import compose_train, train_overrides
    from vexpress.utils.paths import CONF_DIR

    root = Path.cwd()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("demo", overrides=[f"paths.root_dir={root}", "output_dir=/tmp/unused"])
        tcfg = compose_train(train_overrides(cfg, next(iter(cfg.runs))) + [f"paths.root_dir={root}"])
    return Path(ensure_data(tcfg.data))


def main(argv: list[str] | None = None) -> int:
    from vexpress.data.records import load_manifest
    from vexpress.errors import InputError

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None,
                    help="the demo synthetic benchmark (default: the one conf/demo.yaml makes, built if absent)")
    ap.add_argument("--eval-data", default=None,
                    help="score this synthetic set's held-out split, every clip (an exploration set of its own)")
    ap.add_argument("--train-data", default=None, help="fit on this synthetic set's training split instead")
    ap.add_argument("--train-clips", type=int, default=None, help="fit on the first N training clips only")
    ap.add_argument("--num-pad", type=int, default=2,
                    help="the raw window's half-width in frames (the model's: 2, i.e. 10 feature rows)")
    ap.add_argument("--generated", default=None,
                    help="a mouth_frames.py --out JSON of a model on these held-out clips: compare per frame")
    ap.add_argument("--mlp-seeds", type=int, default=2)
    ap.add_argument("--mlp-steps", type=int, default=3000)
    ap.add_argument("--projection-depths", default="",
                    help="comma-separated depths of the tiny audio projection to fit directly (e.g. 1,2,4)")
    ap.add_argument("--export", action="append", default=None,
                    help="a training export: probe its audio tokens instead of the raw windows (repeatable)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(args.data) if args.data else demo_data_root()
    if not (root / "manifest.json").is_file():
        raise InputError(f"{root} holds no synthetic benchmark; pass the folder make demo's report names "
                         "(report.json data.root)")
    for extra in (args.eval_data, args.train_data):
        if extra and not (Path(extra) / "manifest.json").is_file():
            raise InputError(f"{extra} holds no synthetic benchmark; pass a folder with a manifest.json")
    train = load_manifest(Path(args.train_data) if args.train_data else root, split="train")[:args.train_clips]
    if args.eval_data:
        held = load_manifest(Path(args.eval_data), split="heldout")
        fitted = Path(args.train_data) if args.train_data else root
        if Path(args.eval_data).resolve() in (root.resolve(), fitted.resolve()):
            raise InputError(f"--eval-data {args.eval_data} is the demo's data or the one fitted on (its held-out "
                             "split holds the report's clips); pass an exploration set of its own")
    else:
        held = load_manifest(root, split="heldout")[:EXPLORATION_CLIPS]
    for export in args.export or [None]:
        net = None
        if export is not None:
            from vexpress.pipelines import VExpressPipeline

            net = VExpressPipeline.from_export(Path(export), device="cpu", dtype="fp32").net
            print(f"audio tokens of {export}")
        fit_and_score(root, train, held, args, net)
    for depth in [int(d) for d in args.projection_depths.split(",") if d.strip()]:
        fit_projection(train, held, depth, args)
    return 0


def fit_projection(train, held, depth: int, args) -> None:
    """The tiny audio projection at ``depth`` (+ a linear head on its flattened tokens) fitted on the opening with
    the MLP's loss, batch, steps and rate; scored like the regressors."""
    from vexpress.models.audio_projection import AudioProjection
    from vexpress.models.config import VExpressConfig

    xt, yt = windows_and_openings(train, flatten=False)
    xe, ye = windows_and_openings(held, flatten=False)
    x16, y16 = windows_and_openings(held, 16, flatten=False)
    geometry = VExpressConfig.tiny(audio_embedding_dim=int(xt.shape[-1]),
                                   audio_projection_depth=depth).audio_projection
    for seed in range(args.mlp_seeds):
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        proj = AudioProjection(**geometry)
        head = torch.nn.Linear(proj.num_queries * proj.output_dim, 1)
        opt = torch.optim.AdamW([*proj.parameters(), *head.parameters()], 1e-3, weight_decay=1e-2)

        def predict(x):
            return head(proj(x).flatten(1))[:, 0]

        for _ in range(args.mlp_steps):
            i = torch.randint(0, len(yt), (128,), generator=g)
            loss = (predict(xt[i]) - yt[i]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            print(f"audio projection depth {depth} seed {seed}: MAE all frames {(predict(xe) - ye).abs().mean():.4f}, "
                  f"first 16 frames {(predict(x16) - y16).abs().mean():.4f}")


def fit_and_score(root: Path, train, held, args, net=None) -> None:
    net_tokens = net  # the export's network (None: raw windows); ``net`` below is each regressor
    xt, yt = windows_and_openings(train, net=net, num_pad=args.num_pad)
    xe, ye = windows_and_openings(held, net=net, num_pad=args.num_pad)
    x16, y16 = windows_and_openings(held, 16, net=net, num_pad=args.num_pad)
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    xt, xe, x16 = (xt - mu) / sd, (xe - mu) / sd, (x16 - mu) / sd
    fitted = Path(args.train_data).name if args.train_data else root.name
    print(f"{fitted}: {len(train)} training clips ({len(yt)} frames) -> exploration clips 0-{len(held) - 1}"
          f"{' of ' + Path(args.eval_data).name if args.eval_data else ''}")
    print(f"predict the training mean: MAE {np.abs(ye - yt.mean()).mean():.4f} (all frames)")
    for lam in (1.0, 10.0, 100.0):
        w = np.linalg.solve(xt.T @ xt + lam * np.eye(xt.shape[1]), xt.T @ (yt - yt.mean()))
        print(f"ridge (lambda {lam:g}): MAE all frames {np.abs(xe @ w + yt.mean() - ye).mean():.4f}, "
              f"first 16 frames {np.abs(x16 @ w + yt.mean() - y16).mean():.4f}")
    xt_t, yt_t = torch.tensor(xt), torch.tensor(yt)
    first = None
    for seed in range(args.mlp_seeds):
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(xt.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, 256),
                                  torch.nn.GELU(), torch.nn.Linear(256, 1))
        opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
        for _ in range(args.mlp_steps):
            i = torch.randint(0, len(yt_t), (128,), generator=g)
            loss = (net(xt_t[i])[:, 0] - yt_t[i]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pe, p16 = net(torch.tensor(xe))[:, 0].numpy(), net(torch.tensor(x16))[:, 0].numpy()
        print(f"MLP seed {seed}: MAE all frames {np.abs(pe - ye).mean():.4f}, first 16 frames "
              f"{np.abs(p16 - y16).mean():.4f}")
        if first is None:
            first = net
    if args.generated:
        if first is None:
            from vexpress.errors import InputError

            raise InputError("--generated compares with the first MLP: pass --mlp-seeds 1 or more")
        compare_generated(args, held, first, mu, sd, net_tokens)


def compare_generated(args, held, mlp, mu, sd, net_tokens=None) -> None:
    """Per frame of the clips in ``args.generated``: the generated, floor and regressor openings against the truth."""
    gen = json.loads(Path(args.generated).read_text())["clips"]
    rows = []
    for rec in held:
        if rec.id not in gen:
            continue
        g = gen[rec.id]
        n = len(g["model"])
        x, y = windows_and_openings([rec], n, net=net_tokens, num_pad=args.num_pad)
        with torch.no_grad():
            pred = mlp(torch.tensor((x - mu) / sd))[:, 0].numpy()
        rows.append(np.stack([y, np.asarray(g["model"]), np.asarray(g.get("floor", g["model"])), pred], 1))
    if not rows:
        from vexpress.errors import InputError

        raise InputError(f"{args.generated} holds none of these held-out clips; pass a mouth_frames.py --out of a "
                         "model scored on them")
    true, model, floor, reg = np.concatenate(rows).T
    e_model, e_reg, e_floor = np.abs(model - true), np.abs(reg - true), np.abs(floor - true)
    hard = e_reg >= np.quantile(e_reg, 0.75)
    print(f"{len(rows)} clips, {len(true)} frames of {args.generated}: mouth error generated {e_model.mean():.4f}, "
          f"floor {e_floor.mean():.4f}, regressor {e_reg.mean():.4f}; generated vs regressor's opening "
          f"{np.abs(model - reg).mean():.4f}")
    print(f"per frame: corr(|generated error|, |regressor error|) {np.corrcoef(e_model, e_reg)[0, 1]:.3f}; "
          f"generated error where the regressor errs most (its worst quarter) {e_model[hard].mean():.4f}, "
          f"elsewhere {e_model[~hard].mean():.4f}; frames where the generated error exceeds the regressor's "
          f"{(e_model > e_reg).mean():.2f}")


if __name__ == "__main__":
    sys.exit(main())
