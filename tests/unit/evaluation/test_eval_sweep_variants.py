"""Lever rows (``[[variants]]``), DP run overrides and the validation split of the sweep."""

from __future__ import annotations

import dataclasses as dc
import json
from pathlib import Path

import pytest

from secgan.core.errors import ConfigError
from secgan.evaluation.sweep_config import SweepConfig, load_sweep_config
from secgan.evaluation.sweep_plan import (
    gan_config,
    gan_runs,
    inputs_fingerprint,
    is_dp_setting,
    planned_settings,
    runs_of,
)

BASE = """
data = "data"
seeds = [0]
augment_subsets = false
syn_all = false
[missing_modality]
enabled = false
[public]
enabled = false
[gan]
steps = 40
runs = 2
d_arch = "semantic"
loss = "semantic"
[privacy]
epsilons = [3.0, 10.0]
expected_batch_size = 4
steps = 20
"""


def _load(tmp_path: Path, extra: str) -> SweepConfig:
    path = tmp_path / "sweep.toml"
    path.write_text(BASE + extra)
    return load_sweep_config(path)[0]


def test_variants_add_lever_rows_with_their_own_settings(tmp_path):
    cfg = _load(tmp_path, """
[privacy.policy]
secure_noise = false
[privacy.train]
g_average = 0.9
[[variants]]
name = "clip2"
epsilons = [10.0]
runs = 1
privacy = { clip_norm = 2.0, steps = 10, policy = { expected_batch_size = 8 } }
[[variants]]
name = "wide-d"
epsilons = [3.0, 10.0]
gan = { d_width = 16 }
""")
    names = planned_settings(cfg, [1, 2])
    assert names == ["real-all", "real-subset-1", "real-subset-2", "asyndgan", "asyndgan-dp-eps3", "asyndgan-dp-eps10",
                     "lever-clip2-eps10", "lever-wide-d-eps3", "lever-wide-d-eps10"]
    assert [is_dp_setting(n) for n in names[3:]] == [False, True, True, True, True, True]
    assert runs_of(cfg, "lever-clip2-eps10") == 1 and runs_of(cfg, "lever-wide-d-eps3") == 2
    assert "lever-clip2-eps10:0" in gan_runs(cfg) and "lever-clip2-eps10:1" not in gan_runs(cfg)
    sites = [Path("site-1"), Path("site-2")]
    main = gan_config(cfg, sites, Path("pooled"), "asyndgan-dp-eps10")
    clip = gan_config(cfg, sites, Path("pooled"), "lever-clip2-eps10")
    wide = gan_config(cfg, sites, Path("pooled"), "lever-wide-d-eps3", run=1)
    # the main DP rows take [privacy.policy] and [privacy.train]; a variant changes only what it names
    assert main.privacy.secure_noise is False and main.train.g_average == 0.9 and main.privacy.clip_norm == 1.0
    assert clip.privacy.clip_norm == 2.0 and clip.privacy.expected_batch_size == 8 and clip.train.steps == 10
    assert clip.privacy.secure_noise is False and clip.train.g_average == 0.9  # merged, not replaced
    assert clip.run_id == "lever-clip2-eps10" and wide.run_id == "lever-wide-d-eps3-run1"
    assert wide.model.d_width == 16 and main.model.d_width == cfg.gan.d_width and wide.privacy.target_epsilon == 3.0
    assert gan_config(cfg, sites, Path("pooled"), "asyndgan").privacy.mode == "off"


def test_a_variant_changes_only_its_own_rows(tmp_path):
    one = _load(tmp_path, '[[variants]]\nname = "a"\nprivacy = { clip_norm = 2.0 }\n')
    two = _load(tmp_path, '[[variants]]\nname = "a"\nprivacy = { clip_norm = 3.0 }\n')
    names = planned_settings(one, [1])
    changed = {n for n in names if inputs_fingerprint(one, n) != inputs_fingerprint(two, n)}
    assert changed == {"lever-a-eps10"}
    plain = _load(tmp_path, "")
    # an unset override table leaves the main rows' fingerprints as they were before the option existed
    assert all(inputs_fingerprint(plain, n) == inputs_fingerprint(one, n) for n in planned_settings(plain, [1]))
    pol = _load(tmp_path, "[privacy.policy]\nsecure_noise = false\n")
    assert {n for n in planned_settings(pol, [1]) if inputs_fingerprint(pol, n) != inputs_fingerprint(plain, n)} \
        == {"asyndgan-dp-eps3", "asyndgan-dp-eps10"}


@pytest.mark.parametrize("extra, needle", [
    ("[privacy.policy]\nno_such_knob = 1\n", "privacy.policy.no_such_knob"),
    ("[privacy.policy]\nclip_norm = -1.0\n", "policy.clip_norm"),
    ("[privacy.train]\nlr_g = 7.0\n", "train.lr_g"),
    ('[[variants]]\nname = "x"\nprivacy = { policy = { no_such_knob = 1 } }\n', "variants.x.privacy"),
    ('[[variants]]\nname = "x"\nprivacy = { bogus = 1 }\n', "variants.x.privacy.bogus"),
    ('[[variants]]\nname = "x"\ngan = { d_width = 1 }\n', "variants.x.gan.d_width"),
    ('[[variants]]\nname = "x"\ngan = { runs = 3 }\n', "set runs on the variant"),
    ('[[variants]]\nname = "x"\nprivacy = { epsilons = [1.0] }\n', "epsilons on the variant"),
    ('[[variants]]\nname = "Bad Name"\n', "must be 1-32"),
    ('[[variants]]\nname = "x"\n[[variants]]\nname = "x"\n', "distinct"),
    ('[[variants]]\nname = "x"\nepsilons = []\n', "epsilons"),
    ('[[variants]]\nname = "x"\nprivacy = 3\n', "table"),
])
def test_a_bad_lever_or_override_is_refused_at_load_naming_it(tmp_path, extra, needle):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, extra)
    assert needle in str(err.value)


def _fake_root(root: Path, sites: int = 2, train: int = 10, test: int = 4) -> Path:
    for k in range(1, sites + 1):
        site = root / f"site-{k}"
        ids = [f"S{k}-P{i:03d}" for i in range(train + test)]
        for c in ids:
            (site / c).mkdir(parents=True)
            (site / c / f"{c}_seg.nii.gz").write_bytes(c.encode())
        (site / "split.json").write_text(json.dumps({"train": ids[:train], "test": ids[train:]}))
    return root


def test_the_validation_copy_holds_training_patients_only(tmp_path):
    from secgan.evaluation.sweep_data import ensure_validation, validation_root

    src = _fake_root(tmp_path / "data")
    out = validation_root(src)
    assert out == tmp_path / "data-validation"
    ensure_validation(src, out, fraction=0.2)
    for k in (1, 2):
        orig = json.loads((src / f"site-{k}" / "split.json").read_text())
        new = json.loads((out / f"site-{k}" / "split.json").read_text())
        assert len(new["test"]) == 2 and len(new["train"]) == 8  # round(0.2 * 10)
        assert set(new["train"]) | set(new["test"]) == set(orig["train"])  # the test patients are gone
        assert not set(new["test"]) & set(orig["test"]) and not set(new["train"]) & set(new["test"])
        present = {p.name for p in (out / f"site-{k}").iterdir() if p.is_dir()}
        assert present == set(orig["train"])  # not even copied
    first = json.loads((out / "site-1" / "split.json").read_text())
    ensure_validation(src, out, fraction=0.2)  # unchanged: kept as it is, the same patients
    assert json.loads((out / "site-1" / "split.json").read_text()) == first
    ensure_validation(src, out, fraction=0.4)  # another fraction: rebuilt
    assert len(json.loads((out / "site-1" / "split.json").read_text())["test"]) == 4


def test_a_sweep_scored_on_validation_works_on_the_copy_and_is_fingerprinted(tmp_path):
    from secgan.evaluation.sweep import Sweep

    test_cfg = SweepConfig()
    val_cfg = dc.replace(test_cfg, score_on="validation")
    sweep = Sweep(val_cfg, tmp_path / "data", tmp_path / "out")
    assert sweep.data_root == tmp_path / "data-validation" and sweep.source_root == tmp_path / "data"
    assert Sweep(test_cfg, tmp_path / "data", tmp_path / "out").data_root == tmp_path / "data"
    names = planned_settings(test_cfg, [1])
    # a validation result is never reused as a test result, nor the other way round
    assert all(inputs_fingerprint(test_cfg, n) != inputs_fingerprint(val_cfg, n) for n in names)


def test_a_lever_row_can_start_from_the_public_pretraining(tmp_path):
    from secgan.evaluation.sweep_public import adapt_gan_config, starts_pretrained

    cfg = _load(tmp_path, '[[variants]]\nname = "pre"\nprivacy = { pretrained = true, policy = { freeze_d_stages = 1 } }\n')
    assert starts_pretrained(cfg, "lever-pre-eps10") and not starts_pretrained(cfg, "asyndgan-dp-eps10")
    plain = gan_config(cfg, [Path("site-1")], Path("pooled"), "lever-pre-eps10", run=1)
    out = adapt_gan_config(cfg, plain, "lever-pre-eps10", 1, data_root=tmp_path / "data", gans=tmp_path / "gans")
    assert out.train.init_from == str((tmp_path / "gans" / "public-only-run1").resolve())
    assert out.privacy.freeze_d_stages == 1
    # the pretraining is part of what the lever row's result depends on
    other = _load(tmp_path, '[[variants]]\nname = "pre"\nprivacy = { pretrained = false, policy = { freeze_d_stages = 1 } }\n')
    assert inputs_fingerprint(cfg, "lever-pre-eps10") != inputs_fingerprint(other, "lever-pre-eps10")
