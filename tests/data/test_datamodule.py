"""TalkingFaceDataModule from the Hydra data configs."""

from __future__ import annotations

import pytest
import torch

from vexpress.data.batch import check_batch
from vexpress.errors import InputError


def _compose(group, overrides):
    from hydra import compose, initialize_config_dir

    from vexpress.cli._common import config_path

    with initialize_config_dir(config_dir=config_path(), version_base="1.3"):
        return compose("train", overrides=[f"data={group}", *overrides])


def test_synthetic_config_instantiates_and_loads(tmp_path):
    from hydra.utils import instantiate

    cfg = _compose("synthetic", [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/out",
                                 "data.synthetic.num_identities=3", "data.synthetic.heldout_identities=1",
                                 "data.synthetic.clips_per_identity=1", "data.synthetic.seconds=2.0",
                                 "data.synthetic.size=32", "data.num_workers=0", "data.reference_margin=8",
                                 "data.workers_for_synthesis=1"])
    assert cfg.data.num_frames == cfg.stage.num_frames
    dm = instantiate(cfg.data)
    dm.prepare_data()
    assert str(dm.root).startswith(str(cfg.paths.cache_dir)) and dm.root.parent.name == "synthetic"
    dm.batch_size = 2
    batch = next(iter(dm.train_dataloader()))
    assert check_batch(batch, latent_downscale=4) == (2, cfg.stage.num_frames)
    assert dm.audio_dim == cfg.data.audio_dim == 80
    val = next(iter(dm.val_dataloader()))
    assert not val["flipped"].any()


def test_prepared_config_points_at_preprocessed_data(tiny_set, tmp_path):
    from hydra.utils import instantiate

    cfg = _compose("prepared", [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/out",
                                f"data.root={tiny_set}", "data.image_size=32", "data.latent_downscale=8",
                                "data.audio_dim=80", "data.num_workers=0", "data.reference_margin=5",
                                "data.val_split=heldout", "stage.num_frames=4", "stage.batch_size=2"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    batch = next(iter(dm.train_dataloader()))
    assert batch["lip_masks"].shape == (2, 1, 4, 4, 4)


def test_audio_dim_mismatch_is_a_user_error(tiny_set):
    from vexpress.training.datamodule import TalkingFaceDataModule

    dm = TalkingFaceDataModule(root=str(tiny_set), num_frames=2, batch_size=2, image_size=32, audio_dim=768)
    with pytest.raises(InputError, match="audio_dim"):
        dm.setup("fit")
    with pytest.raises(InputError, match="exactly one"):
        TalkingFaceDataModule(num_frames=1)
    with pytest.raises(InputError, match="no manifest"):
        TalkingFaceDataModule(root="/nonexistent/x").prepare_data()


def test_workers_and_state(tiny_set):
    from vexpress.training.datamodule import TalkingFaceDataModule

    dm = TalkingFaceDataModule(root=str(tiny_set), num_frames=3, batch_size=2, image_size=32, num_workers=2,
                               reference_margin=5, samples_per_clip=2, seed=5)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 2 and all(b["target_images"].shape == (2, 3, 3, 32, 32) for b in batches)
    dm.load_state_dict({"epoch": 4})
    assert dm.state_dict() == {"epoch": 4}
    ref = TalkingFaceDataModule(root=str(tiny_set), num_frames=3, batch_size=2, image_size=32, num_workers=0,
                                reference_margin=5, samples_per_clip=2, seed=5)
    first = next(iter(ref.train_dataloader()))
    assert torch.equal(first["target_images"], batches[0]["target_images"])
