"""``ConditionDropout``: per-sample condition drops for each training batch (house style §4.6).

The callback samples, the network applies: in ``on_train_batch_start`` it draws a
:class:`~vexpress.models.conditioning.DropMask` from the stage's rates (see :mod:`vexpress.training.dropout`) and
puts it under ``batch["drop"]``; the LitModule passes it to the network. Rates may ramp within the stage (progress =
global step / ``trainer.max_steps``). It logs the rates applied (``dropout/p_<cond>``) and the fraction of the batch
actually dropped (``dropout/frac_<cond>``).

Random stream: its own, counter-based (:mod:`vexpress.training.rng`): the draw for step ``n`` on rank ``r`` is a
function of (seed, r, n). ``state_dict`` holds the counter, so a resumed run draws exactly the masks the
uninterrupted run would have drawn, on every DDP rank.
"""

from __future__ import annotations

from typing import Any, Mapping

import lightning.pytorch as pl

from vexpress.callbacks._util import batch_size_of, log_metrics, stage_progress_of
from vexpress.training.dropout import DropRates, DropSchedule, sample_drop
from vexpress.training.rng import generator_for


class ConditionDropout(pl.Callback):
    """Args:
    rates: this stage's rates ``{uncond, reference, kps, audio}``, each a number or a ``{start, end}`` ramp.
    seed: seed of the dropout stream.
    key: batch key the mask is stored under.
    """

    def __init__(self, rates: Mapping[str, Any] | None = None, seed: int = 0, key: str = "drop"):
        super().__init__()
        self.schedule = DropSchedule.from_config(rates)
        self.seed = int(seed)
        self.key = key
        self.draws = 0
        self.last_rates: DropRates | None = None

    # functional core ---------------------------------------------------------------------------------------------
    def next_mask(self, batch_size: int, progress: float, rank: int = 0):
        """Draw the next mask (advances the stream). Returns ``(DropMask, uncond (B,), DropRates)``."""
        rates = self.schedule.at(progress)
        g = generator_for(self.seed, "dropout", rank, self.draws)
        self.draws += 1
        mask, uncond = sample_drop(rates, batch_size, g)
        return mask, uncond, rates

    # event shell -------------------------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        b = batch_size_of(batch)
        mask, uncond, rates = self.next_mask(b, stage_progress_of(trainer), int(trainer.global_rank))
        batch[self.key] = mask.to(pl_module.device)
        self.last_rates = rates
        values = {f"dropout/p_{k}": v for k, v in rates.as_dict().items()}
        values.update({
            "dropout/frac_uncond": float(uncond.float().mean()),
            "dropout/frac_reference": float(mask.reference.float().mean()),
            "dropout/frac_kps": float(mask.kps.float().mean()),
            "dropout/frac_audio": float(mask.audio.float().mean()),
        })
        log_metrics(pl_module, values, b)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "draws": int(self.draws)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.seed = int(state_dict["seed"])
        self.draws = int(state_dict["draws"])
