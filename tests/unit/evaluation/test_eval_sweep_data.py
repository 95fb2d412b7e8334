"""Sweep data: the phantom federation and the public atlas generated when missing."""

from __future__ import annotations

from secgan.evaluation.sweep_config import SweepConfig



def test_public_atlas_bank_is_generated_once_from_other_patients(tmp_path):
    """gan.condition_source = "bank" without bank_dir: the sweep's condition bank is the label maps
    of an atlas phantom with its own seed: no map equals one of the sites' own."""
    import numpy as np

    from secgan.gan.conditions import BankConditions
    from secgan.evaluation.sources import load_real_slices
    from secgan.evaluation.sweep_config import AtlasConfig, PhantomConfig
    from secgan.evaluation.sweep_data import ensure_atlas, ensure_data

    cfg = SweepConfig(phantom=PhantomConfig(sites=2, patients=4, size=32, slices=12, seed=5),
                      atlas=AtlasConfig(sites=1, patients=5, seed=6))
    data = ensure_data(cfg, tmp_path / "data")
    bank = ensure_atlas(cfg, data)
    assert bank == tmp_path / "data-atlas" / "bank"
    maps = BankConditions(bank, 32)
    assert len(maps) > 5  # tumour-bearing slices of 5 atlas patients
    own = load_real_slices(data, site=None, image_size=32)[1]
    own_bytes = {c.tobytes() for c in own}
    assert not any(c.numpy().tobytes() in own_bytes for c in maps._conds)
    stamp = (bank / "conds.safetensors").stat().st_mtime_ns
    assert ensure_atlas(cfg, data) == bank and (bank / "conds.safetensors").stat().st_mtime_ns == stamp
    assert np.isfinite(maps._conds.numpy()).all()
