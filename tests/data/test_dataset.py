"""Training samples: official construction, seek decoding, flips, determinism, workers, latent cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vexpress.audio.windows import audio_windows
from vexpress.data.batch import check_batch
from vexpress.data.records import load_manifest
from vexpress.data.talking_face import EpochSampler, TalkingFaceDataset, naive_sample
from vexpress.errors import InputError


@pytest.fixture(scope="module")
def records(tiny_set):
    return load_manifest(tiny_set, split="train")


def _ds(records, **kw):
    args = dict(num_frames=6, image_size=32, latent_downscale=4, reference_margin=10, kps_canvas=128, seed=3)
    args.update(kw)
    return TalkingFaceDataset(records, **args)


def test_sample_shapes_ranges_and_plan(records):
    ds = _ds(records)
    s = ds[5]
    assert s["reference_image"].shape == (3, 32, 32) and s["target_images"].shape == (3, 6, 32, 32)
    assert s["kps_images"].shape == (3, 6, 32, 32) and s["lip_masks"].shape == (1, 6, 8, 8)
    assert s["audio_windows"].shape == (6, 10, 80)
    assert -1 <= s["target_images"].min() and s["target_images"].max() <= 1
    assert 0 <= s["kps_images"].min() and s["kps_images"].max() <= 1 and s["kps_images"].max() > 0.5
    assert 0 <= s["lip_masks"].min() and s["lip_masks"].max() == 1
    ids, ref = s["frame_indices"].numpy(), int(s["reference_index"])
    assert np.array_equal(np.diff(ids), np.ones(5))  # consecutive (sample_rate 1)
    assert ref < ids.min() - 10 or ref >= ids.max() + 10  # outside the margin
    rec = next(r for r in records if r.id == s["clip_id"])
    expected = audio_windows(rec.audio_features, rec.num_frames)[torch.from_numpy(ids)]
    assert torch.equal(s["audio_windows"], expected)


def test_sample_rate_spreads_frames(records):
    s = _ds(records, num_frames=4, sample_rate=3, reference_margin=2)[0]
    assert np.array_equal(np.diff(s["frame_indices"].numpy()), [3, 3, 3])


def test_seek_decoding_matches_whole_clip_decoding(records):
    ds = _ds(records)
    for key in (0, 7, 12):
        fast, slow = ds[key], naive_sample(ds, key)
        assert torch.equal(fast["target_images"], slow["target_images"])
        assert torch.equal(fast["reference_image"], slow["reference_image"])


def test_flip_mirrors_everything_and_swaps_kps_channels(records):
    a = _ds(records, flip_prob=0.0)[4]
    b = _ds(records, flip_prob=1.0)[4]
    assert torch.equal(a["frame_indices"], b["frame_indices"]) and bool(b["flipped"])
    assert torch.equal(b["target_images"], a["target_images"].flip(-1))
    assert torch.equal(b["lip_masks"], a["lip_masks"].flip(-1))
    assert torch.equal(b["kps_images"], a["kps_images"].flip(-1)[[1, 0, 2]])
    # red (left-in-image eye) stays on the left half after the flip
    red = b["kps_images"][0, 0]
    cols = torch.nonzero(red > 0.9)[:, 1].float()
    assert cols.mean() < 16


def test_lip_mask_covers_the_mouth(records):
    s = _ds(records, flip_prob=0.0)[2]
    rec = next(r for r in records if r.id == s["clip_id"])
    i = int(s["frame_indices"][0])
    mouth = rec.mouth[i].numpy() / 4  # latent pixels (32 -> 8)
    cx, cy = mouth.mean(0)
    assert s["lip_masks"][0, 0, int(cy), int(cx)] > 0.9
    assert s["lip_masks"][0, 0, 0, 0] == 0


def test_single_frame_stage(records):
    ds = _ds(records, num_frames=1)
    batch = torch.utils.data.default_collate([ds[k] for k in range(4)])
    assert check_batch(batch, latent_downscale=4) == (4, 1)


def test_deterministic_and_worker_independent(records):
    ds = _ds(records, samples_per_clip=4)
    sampler = EpochSampler(len(ds), seed=1)
    sampler.set_epoch(2)

    def first_batch(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers)
        return next(iter(loader))

    a, b = first_batch(0), first_batch(2)
    for k, v in a.items():
        assert torch.equal(v, b[k]) if torch.is_tensor(v) else v == b[k], k
    keys1 = list(iter(sampler))
    sampler.set_epoch(3)
    assert keys1 != list(iter(sampler))  # new keys every epoch


def test_too_long_request(records):
    from vexpress.errors import InputError

    with pytest.raises(InputError, match="lower num_frames"):
        _ds(records, num_frames=500)


def test_short_clips_fall_back_to_farthest_reference(records):
    ds = _ds(records, num_frames=50, reference_margin=30)
    s = ds[0]
    ids, ref = s["frame_indices"].numpy(), int(s["reference_index"])
    assert ref not in ids


def test_silent_references_have_a_closed_mouth(records):
    """reference_frames=silent draws the reference among frames the audio says are silent: on synthetic clips (whose
    mouth the audio decides) a closed mouth, where the official choice (any) often gives an open one."""
    opening = {r.id: r.gt_mouth.numpy()[:, 0] for r in records}

    def reference_openings(mode):
        ds = _ds(records, num_frames=4, reference_margin=4, reference_frames=mode)
        plans = [ds.plan(k) for k in range(60)]
        return np.array([opening[records[p["clip"]].id][p["reference"]] for p in plans])

    silent, anyf = reference_openings("silent"), reference_openings("any")
    assert (silent < 0.02).mean() >= 0.9 and (anyf < 0.02).mean() < 0.7
    ds = _ds(records, num_frames=4, reference_margin=4, reference_frames="silent")
    p = ds.plan(7)
    assert not set(p["frames"]) & {p["reference"]}  # still outside the targets
    with pytest.raises(InputError, match="reference_frames"):
        _ds(records, reference_frames="closed")


def test_latent_cache(records, tmp_path):
    from diffusers import AutoencoderKL

    from vexpress.data.cache import LatentCache, build_latent_cache

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1).eval()
    from vexpress.audio import LogMelEncoder

    cache = build_latent_cache(records, vae, tmp_path / "cache", image_size=32, crop="center", flip=True,
                               audio_encoder=LogMelEncoder(n_mels=16))
    mean_cache = LatentCache(cache.path, sample=False)
    ds = _ds(records, latent_cache=mean_cache, return_images=True, flip_prob=0.5)
    for key in (1, 2):
        s = ds[key]
        assert s["reference_latents"].shape == (4, 8, 8) and s["target_latents"].shape == (4, 6, 8, 8)
        assert s["audio_windows"].shape[-1] == 16  # features from the cache's encoder
        with torch.no_grad():
            direct = vae.encode(s["target_images"].permute(1, 0, 2, 3)).latent_dist.mean * 0.18215
        assert torch.allclose(s["target_latents"].permute(1, 0, 2, 3), direct, atol=2e-2)
    sampled = _ds(records, latent_cache=LatentCache(cache.path, sample=True))[1]
    assert "target_images" not in sampled and sampled["target_latents"].shape == (4, 6, 8, 8)


def test_default_kps_drawing_matches_the_generation_drawing(records):
    """kps_canvas=None draws at the output size, exactly like vexpress.kps.draw at inference."""
    from vexpress.kps.draw import draw_kps_sequence

    ds = _ds(records, kps_canvas=None, flip_prob=0.0)
    s = ds[3]
    rec = next(r for r in records if r.id == s["clip_id"])
    kps = rec.kps[s["frame_indices"]]  # 32x32 clips, crop none/center = identity here
    assert torch.equal(s["kps_images"], draw_kps_sequence(32, 32, kps))


def test_two_jobs_building_one_latent_cache_both_finish(records, tiny_set, tmp_path):
    """Two jobs that start on the same latent cache (a multirun, study seeds side by side) each build in a folder of
    their own; both finish, the first complete folder is kept, it is complete, and no temporary folder is left.
    They used to share one '.building' folder: the old code failed this test in 1 of 3 runs (FileNotFoundError), as
    two real demos on one cache did."""
    import threading

    from diffusers import AutoencoderKL
    from omegaconf import OmegaConf

    from vexpress.data.cache import INDEX, LatentCache
    from vexpress.demo.prepare import ensure_latents

    inside = threading.Barrier(2, timeout=60)

    class BothInside(AutoencoderKL):
        """A real VAE whose first encode in each job waits until the other job is building too."""

        def encode(self, *args, **kwargs):
            if not getattr(local, "met", False):
                local.met = True
                inside.wait()
            return super().encode(*args, **kwargs)

    local = threading.local()
    torch.manual_seed(0)
    vae = BothInside(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                     up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, norm_num_groups=4,
                     layers_per_block=1).eval()
    cfg = OmegaConf.create({"paths": {"cache_dir": str(tmp_path)}, "latent_cache": {"flip": False, "batch_size": 2}})
    results, errors = [], []

    def job():
        try:
            results.append(ensure_latents(cfg, Path(tiny_set), records, vae, {"key": "tiny"}, 32, "center").path)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(set(results)) == 1 and (results[0] / INDEX).is_file()
    assert sorted(p.name for p in (tmp_path / "latents").iterdir()) == [results[0].name]
    cache = LatentCache(results[0], sample=False)  # complete: every frame of every clip is there
    for rec in records:
        first, others = cache.latents(rec.id, list(range(rec.num_frames)))
        assert first.shape[0] == 4 and others.shape[1] == rec.num_frames - 1
