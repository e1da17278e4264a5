from __future__ import annotations

import pytest

from vexpress.errors import InputError
from vexpress.training.schedules import Ramp, TimestepBias, as_schedule, stage_progress


def test_constant_and_ramp():
    assert as_schedule(0.3)(0.0) == as_schedule(0.3)(1.0) == 0.3
    r = as_schedule({"start": 0.0, "end": 0.5, "begin": 0.2, "finish": 0.6})
    assert r(0.0) == 0.0 and r(0.2) == 0.0 and r(0.6) == 0.5 and r(1.0) == 0.5
    assert abs(r(0.4) - 0.25) < 1e-12
    assert Ramp(1.0, 0.0, 0.5, 0.5)(0.49) == 1.0 and Ramp(1.0, 0.0, 0.5, 0.5)(0.5) == 0.0


def test_bounds_and_bad_specs_are_user_errors():
    with pytest.raises(InputError):
        as_schedule(1.5, "p", 0.0, 1.0)
    with pytest.raises(InputError):
        as_schedule({"start": 0.1}, "p")
    with pytest.raises(InputError):
        as_schedule("linear", "p")
    with pytest.raises(InputError):
        Ramp(0, 1, 0.8, 0.2)


def test_stage_progress():
    assert stage_progress(0, 10) == 0.0 and stage_progress(9, 10) == 1.0 and stage_progress(20, 10) == 1.0
    assert stage_progress(0, 1) == 0.0


def test_timestep_bias_weights():
    later = TimestepBias.from_config({"strategy": "later", "portion": 0.5, "multiplier": 3})
    w = later.weights(1000)
    assert len(w) == 1000 and w[499] == 1.0 and w[500] == 3.0 and w[-1] == 3.0
    assert abs(sum(w[500:]) / sum(w) - 0.75) < 1e-12  # 75 % of the draws at t >= 500
    early = TimestepBias.from_config({"strategy": "earlier", "portion": 0.25, "multiplier": 2}).weights(1000)
    assert early[249] == 2.0 and early[250] == 1.0
    rng = TimestepBias.from_config({"strategy": "range", "begin": 600, "end": 800, "multiplier": 5}).weights(1000)
    assert rng[599] == 1.0 and rng[600] == 5.0 and rng[799] == 5.0 and rng[800] == 1.0
    assert TimestepBias.from_config(None) is None


@pytest.mark.parametrize("cfg", [
    {"strategy": "late", "multiplier": 3},
    {"strategy": "later", "multiplier": 0},
    {"strategy": "later", "multiplier": 3, "portion": 1.0},
    {"strategy": "range", "multiplier": 3, "begin": 800, "end": 600},
    {"strategy": "later", "multiplier": "x"},
    {"strategy": "later", "multiplier": 3, "portoin": 0.5},
    "later",
])
def test_bad_timestep_bias_is_a_one_line_user_error(cfg):
    with pytest.raises(InputError) as err:
        TimestepBias.from_config(cfg, "stage 'audio_motion' timestep_bias")
    assert "timestep_bias" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError):
        TimestepBias.from_config({"strategy": "range", "begin": 0, "end": 2000, "multiplier": 2}).weights(1000)
