from __future__ import annotations

import pytest

from vexpress.errors import InputError
from vexpress.training.schedules import Ramp, as_schedule, stage_progress


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
