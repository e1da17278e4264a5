"""crop_scale is validated as given: 0 is refused like 0.5, not read as "use the default"."""

from __future__ import annotations

import pytest

from vexpress.errors import InputError
from vexpress.pipelines.vexpress_pipeline import prepare_inputs


@pytest.mark.parametrize("scale", [0, 0.0, 0.5, -1.9, 11])
def test_out_of_range_crop_scale_is_refused(scale):
    # refused while reading the options, before the (here absent) photo and audio are opened
    with pytest.raises(InputError, match=f"crop_scale={scale} must be between 1 and 10"):
        prepare_inputs("missing.png", "missing.wav", crop_scale=scale)
