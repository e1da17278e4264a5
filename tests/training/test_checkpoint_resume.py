"""Choosing the checkpoint a stage resumes from: the newest readable one, a truncated newest one skipped with one
warning naming it, a folder of unreadable checkpoints a one-line error (real files written with torch.save)."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from vexpress.errors import InputError
from vexpress.training.checkpoints import checkpoint_is_readable, resume_checkpoint


def _ckpt(path, step: int) -> None:
    torch.save({"state_dict": {"w": torch.full((64, 64), float(step))}, "global_step": step, "epoch": 0}, path)


def _truncate(path, keep: float = 0.5) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(int(size * keep))


def _stage(tmp_path, steps=(2, 3)):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for s in steps:
        _ckpt(folder / f"step_{s:07d}.ckpt", s)
    os.symlink(f"step_{steps[-1]:07d}.ckpt", folder / "last.ckpt")
    return folder


def test_no_checkpoint_starts_from_scratch(tmp_path):
    assert resume_checkpoint(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert resume_checkpoint(tmp_path / "empty") is None


def test_last_checkpoint_is_used_when_readable(tmp_path):
    folder = _stage(tmp_path)
    assert resume_checkpoint(folder) == str(folder / "last.ckpt")


def test_truncated_last_falls_back_to_the_previous_with_one_warning(tmp_path, caplog):
    folder = _stage(tmp_path)
    _truncate(folder / "step_0000003.ckpt")  # last.ckpt links to it
    assert not checkpoint_is_readable(folder / "last.ckpt")
    with caplog.at_level(logging.WARNING, logger="vexpress.train"):
        chosen = resume_checkpoint(folder, "joint")
    assert chosen == str(folder / "step_0000002.ckpt")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "last.ckpt" in warnings[0] and "step_0000003.ckpt" in warnings[0]
    assert "\n" not in warnings[0] and str(folder / "step_0000002.ckpt") in warnings[0]


def test_regular_last_file_truncated(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    _ckpt(folder / "step_0000004.ckpt", 4)
    _ckpt(folder / "last.ckpt", 6)
    _truncate(folder / "last.ckpt", 0.1)
    with caplog.at_level(logging.WARNING, logger="vexpress.train"):
        assert resume_checkpoint(folder) == str(folder / "step_0000004.ckpt")
    assert any("last.ckpt" in r.getMessage() for r in caplog.records)


def test_no_readable_checkpoint_is_a_one_line_error_naming_the_folder(tmp_path):
    folder = _stage(tmp_path)
    for name in ("step_0000002.ckpt", "step_0000003.ckpt"):
        _truncate(folder / name)
    with pytest.raises(InputError) as exc:
        resume_checkpoint(folder, "joint")
    msg = str(exc.value)
    assert "\n" not in msg and str(folder) in msg and "delete that folder" in msg and "'joint'" in msg


def test_interrupted_writes_are_ignored_and_removed(tmp_path):
    folder = _stage(tmp_path, steps=(2,))
    partial = folder / ".step_0000003.ckpt.123.partial"
    _ckpt(partial, 3)
    _truncate(partial)
    assert resume_checkpoint(folder) == str(folder / "last.ckpt")
    assert not partial.exists()


def test_not_a_checkpoint_is_unreadable(tmp_path):
    (tmp_path / "x.ckpt").write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "y.ckpt")
    assert not checkpoint_is_readable(tmp_path / "x.ckpt")
    assert not checkpoint_is_readable(tmp_path / "y.ckpt")
    assert not checkpoint_is_readable(tmp_path / "missing.ckpt")


# ---- SafeModelCheckpoint in a real (tiny) Lightning fit -------------------------------------------------------------
class _Tiny:
    @staticmethod
    def module():
        import lightning.pytorch as pl

        class Lin(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(4, 1)

            def training_step(self, batch, batch_idx):
                return self.lin(batch).pow(2).mean()

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

            def train_dataloader(self):
                return torch.utils.data.DataLoader(torch.randn(16, 4), batch_size=2)

        return Lin()


class _FailSave:
    """A save that fails at ``step`` (as a full disk would), raised while the checkpoint is being assembled."""

    def __new__(cls, step):
        import lightning.pytorch as pl

        class Fail(pl.Callback):
            def on_save_checkpoint(self, trainer, pl_module, checkpoint):
                if trainer.global_step >= step:
                    raise OSError(28, "No space left on device")

        return Fail()


def _fit(folder, max_steps, extra=(), ckpt_path=None):
    import lightning.pytorch as pl

    from vexpress.callbacks.checkpoint import SafeModelCheckpoint

    cb = SafeModelCheckpoint(dirpath=str(folder), filename="step_{step:07d}", every_n_train_steps=1, monitor="step",
                             mode="max", save_top_k=2, save_last="link", auto_insert_metric_name=False)
    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[cb, *extra])
    trainer.fit(_Tiny.module(), ckpt_path=ckpt_path, weights_only=True)
    return trainer


def test_two_newest_complete_checkpoints_are_kept_and_last_links_the_newest(tmp_path):
    folder = tmp_path / "checkpoints"
    _fit(folder, 4)
    assert sorted(p.name for p in folder.glob("step_*.ckpt")) == ["step_0000003.ckpt", "step_0000004.ckpt"]
    assert os.path.realpath(folder / "last.ckpt") == os.path.realpath(folder / "step_0000004.ckpt")
    assert not list(folder.glob(".*"))  # no temporaries left
    assert all(checkpoint_is_readable(p) for p in folder.glob("*.ckpt"))


def test_a_failed_save_leaves_the_previous_checkpoints_intact(tmp_path):
    folder = tmp_path / "checkpoints"
    with pytest.raises(OSError):
        _fit(folder, 6, extra=[_FailSave(3)])
    assert sorted(p.name for p in folder.glob("step_*.ckpt")) == ["step_0000001.ckpt", "step_0000002.ckpt"]
    assert not list(folder.glob(".*partial"))
    chosen = resume_checkpoint(folder)
    assert chosen is not None and torch.load(chosen, weights_only=True)["global_step"] == 2
    trainer = _fit(folder, 4, ckpt_path=chosen)  # and the run resumes from it
    assert trainer.global_step == 4
