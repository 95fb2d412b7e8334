"""What the audits assume about images follows the run's image spec: any channel count, and the
spec's value range (RGB in [0, 1], not only normalised MRI in [-1, 1])."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from audits.api import fit_to_spec
from audits.core import AuditConfig
from audits.report import image_pair_png
from secgan.core.spec import ImageSpec, rgb_spec


def _pixels(data_url: str) -> np.ndarray:
    from PIL import Image

    raw = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("L"), dtype=np.float32)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_annex_pairs_draw_any_channel_count(channels: int) -> None:
    img = np.full((channels, 16, 16), 0.5, np.float32)
    assert _pixels(image_pair_png(img, img, "t", value_range=(0.0, 1.0))).size > 0


def test_annex_grey_levels_span_the_spec_range() -> None:
    # a black RGB image (0 in [0, 1]) is drawn black, not the mid grey it is on MRI's [-1, 1] scale
    black = np.zeros((3, 32, 32), np.float32)
    px = _pixels(image_pair_png(black, black, "", value_range=(0.0, 1.0)))
    assert (px < 10).mean() > 0.2
    grey = _pixels(image_pair_png(black, black, "", value_range=(-1.0, 1.0)))
    assert (grey < 10).mean() < 0.05


def test_embedding_padding_stays_inside_the_value_range() -> None:
    brain = fit_to_spec(AuditConfig(), ImageSpec(size=16))
    assert brain.embedding.pad_value == -1.0  # MRI's background, unchanged
    rgb = fit_to_spec(AuditConfig(), rgb_spec(16, condition="class", cond_names=("a", "b")))
    assert rgb.embedding.pad_value == 0.0
