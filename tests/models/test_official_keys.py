"""At the SD1.5 config our five state dicts equal the official release layout key for key and shape for shape.

The 2.2 B-parameter model is built on the ``meta`` device: shapes only, no memory, no weights.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from vexpress.models import VExpressConfig, VExpressNet
from vexpress.models.weights import official_state_dicts
from vexpress.utils.paths import shared_dir


def _manifest() -> dict[str, dict[str, tuple[int, ...]]]:
    path = shared_dir() / "design" / "official_state_dict_keys.txt"
    if not path.is_file():
        pytest.skip(reason=f"official key manifest not present at {path} (set VEXPRESS_SHARED_DIR)")
    out: dict[str, dict[str, tuple[int, ...]]] = defaultdict(dict)
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        module, key, shape = line.split(" ", 2)
        out[module][key] = tuple(int(x) for x in shape.strip("[]").split(",") if x)
    return out


@pytest.fixture(scope="module")
def sd15_dicts():
    with torch.device("meta"):
        net = VExpressNet(VExpressConfig.sd15())
    return official_state_dicts(net)


@pytest.mark.parametrize("module", ["reference_net", "denoising_unet", "motion_module", "v_kps_guider",
                                    "audio_projection"])
def test_keys_and_shapes_match_the_official_release(sd15_dicts, module):
    expected = _manifest()[module]
    ours = {k: tuple(v.shape) for k, v in sd15_dicts[module].items()}
    assert sorted(set(expected) - set(ours)) == [], "keys missing from our model"
    assert sorted(set(ours) - set(expected)) == [], "keys our model has but the release does not"
    wrong = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert wrong == {}


def test_official_counts(sd15_dicts):
    counts = {k: len(v) for k, v in sd15_dicts.items()}
    assert counts == {"denoising_unet": 1386, "motion_module": 588, "reference_net": 684, "v_kps_guider": 16,
                      "audio_projection": 52}
    params = {k: sum(t.numel() for name, t in v.items() if not name.endswith("pos_encoder.pe"))
              for k, v in sd15_dicts.items()}
    # parameter totals from the spec (§1.4 table)
    assert params["denoising_unet"] == 1_362_329_284
    assert params["reference_net"] == 859_520_324
    assert params["v_kps_guider"] == 1_086_480
    assert params["audio_projection"] == 29_524_224
