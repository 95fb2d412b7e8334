"""Training-source names and the real-data loaders (on the shared phantom fixture)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from secgan.core.errors import ConfigError, DataError
from secgan.evaluation.downstream import Workbench, training_set
from secgan.evaluation.sources import (
    SourceSpec,
    conds_to_segs,
    drop_modality,
    load_real_train,
    load_test_patients,
    parse_source,
    site_dirs,
)
from secgan.core.spec import encode_condition


@pytest.mark.parametrize(
    "text,spec",
    [
        ("real-all", SourceSpec(real=True, site=None, synthetic=False)),
        ("real-subset-2", SourceSpec(real=True, site=2, synthetic=False)),
        ("real-subset-12", SourceSpec(real=True, site=12, synthetic=False)),
        ("synthetic", SourceSpec(real=False, site=None, synthetic=True)),
        ("real-subset-2+synthetic", SourceSpec(real=True, site=2, synthetic=True)),
        ("real-all+synthetic", SourceSpec(real=True, site=None, synthetic=True)),
    ],
)
def test_parse_source(text, spec):
    assert parse_source(text) == spec
    assert spec.name == text


@pytest.mark.parametrize("text", ["", "real", "real-subset-0", "real-subset-", "+synthetic", "real-allsynthetic", "syn", "real-subset-2+real-all"])
def test_parse_source_refuses(text):
    with pytest.raises(ConfigError):
        parse_source(text)


def test_site_dirs(phantom_root, tmp_path):
    assert list(site_dirs(phantom_root)) == [1, 2, 3]
    with pytest.raises(DataError):
        site_dirs(tmp_path)
    with pytest.raises(DataError):
        site_dirs(tmp_path / "nope")


def test_real_sources_and_test_set(phantom_root):
    im_all, sg_all = load_real_train(phantom_root, site=None, image_size=32)
    im_2, sg_2 = load_real_train(phantom_root, site=2, image_size=32)
    assert im_all.shape[1:] == (4, 32, 32) and sg_all.shape == (len(im_all), 32, 32)
    assert 0 < len(im_2) < len(im_all)
    assert (sg_2 > 0).any(axis=(1, 2)).all()  # training slices carry tumour
    test = load_test_patients(phantom_root, image_size=32)
    n_test = sum(len(json.loads((d / "split.json").read_text())["test"]) for d in site_dirs(phantom_root).values())
    assert len(test) == n_test
    # test patients keep their tumour-free brain slices too
    assert any(not (p.segs > 0).any(axis=(1, 2)).all() for p in test)
    bench = Workbench(phantom_root, 32)
    im, sg = training_set(parse_source("real-subset-2"), bench, seed=0, checkpoint=None, n_synthetic=None)
    assert np.array_equal(im, im_2) and np.array_equal(sg, sg_2)
    with pytest.raises(DataError):
        load_real_train(phantom_root, site=9, image_size=32)
    with pytest.raises(ConfigError):
        training_set(parse_source("synthetic"), bench, seed=0, checkpoint=None, n_synthetic=None)


def test_conds_to_segs_and_drop_modality():
    seg = np.zeros((8, 8), np.int16)
    seg[2:6, 2:6] = 2
    seg[3:5, 3:5] = 4
    seg[3, 3] = 1
    cond = encode_condition(seg, np.ones((8, 8), bool))[None]
    assert np.array_equal(conds_to_segs(cond)[0], seg)
    images = np.zeros((2, 4, 8, 8), np.float32)
    out = drop_modality(images, ["flair"])
    assert (out[:, 3] == -1).all() and (out[:, :3] == 0).all() and (images == 0).all()
