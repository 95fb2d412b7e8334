"""Condition sources: procedural label maps, banks (safetensors and NIfTI), the factory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from secgan.gan.conditions import BankConditions, ProceduralConditions, build_condition_source, validate_conditions
from secgan.core.errors import ConfigError, DataError


def _check(c: torch.Tensor, n: int, size: int) -> None:
    assert c.shape == (n, 4, size, size) and c.dtype == torch.float32
    validate_conditions(c, where="test")  # values in {0,1}, disjoint tumour, tumour inside brain


def test_procedural_invariants_and_variety():
    c = ProceduralConditions(32).draw(64, generator=torch.Generator().manual_seed(0))
    _check(c, 64, 32)
    tumour = c[:, 1:].sum(dim=(1, 2, 3))
    assert (tumour > 0).float().mean() >= 0.95
    with_et = (c[:, 3].sum(dim=(1, 2)) > 0).float().mean()
    assert 0.5 < with_et < 0.9  # enhancing in most slices; the tumour's top and bottom hold oedema alone
    assert (c[:, 1].sum(dim=(1, 2)) > 0).float().mean() > 0.15  # necrosis in some (about a quarter, as in the phantom)
    brain = c[:, 0].sum(dim=(1, 2))
    assert brain.min() > 0.2 * 32 * 32 and brain.max() < 32 * 32  # brain inside the frame
    assert tumour.std() > 0 and brain.std() > 0
    assert len({c[i].numpy().tobytes() for i in range(64)}) == 64


def test_procedural_uses_only_the_generator():
    src = ProceduralConditions(16)
    a = src.draw(4, generator=torch.Generator().manual_seed(11))
    torch.rand(100)  # disturb the global RNG
    b = src.draw(4, generator=torch.Generator().manual_seed(11))
    c = src.draw(4, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_procedural_argument_checks():
    with pytest.raises(ConfigError):
        ProceduralConditions(4)
    with pytest.raises(TypeError):
        ProceduralConditions(16).draw(2, generator=np.random.default_rng(0))  # type: ignore[arg-type]
    assert ProceduralConditions(16).draw(0, generator=torch.Generator()).shape == (0, 4, 16, 16)


def test_bank_from_safetensors(tmp_path: Path):
    maps = ProceduralConditions(32).draw(10, generator=torch.Generator().manual_seed(1))
    save_file({"conds": maps}, str(tmp_path / "conds.safetensors"))
    bank = BankConditions(tmp_path, 32)
    assert len(bank) == 10
    d = bank.draw(25, generator=torch.Generator().manual_seed(2))
    _check(d, 25, 32)
    members = {maps[i].numpy().tobytes() for i in range(10)}
    assert all(d[i].numpy().tobytes() in members for i in range(25))
    again = bank.draw(25, generator=torch.Generator().manual_seed(2))
    assert torch.equal(d, again)
    _check(BankConditions(tmp_path, 16).draw(5, generator=torch.Generator()), 5, 16)


def _bad_bank(tmp_path: Path, tensors: dict) -> str:
    save_file(tensors, str(tmp_path / "conds.safetensors"))
    with pytest.raises(DataError) as info:
        BankConditions(tmp_path, 16)
    assert "conds.safetensors" in str(info.value)
    return str(info.value)


def test_bank_refuses_invalid_maps(tmp_path: Path):
    good = ProceduralConditions(16).draw(3, generator=torch.Generator().manual_seed(0))
    assert "exactly one tensor" in _bad_bank(tmp_path, {"labels": good})
    half = good.clone()
    half[0, 0, 0, 0] = 0.5
    assert "0 or 1" in _bad_bank(tmp_path, {"conds": half})
    overlap = good.clone()
    overlap[:, 1:, 8, 8] = 1
    overlap[:, 0, 8, 8] = 1
    assert "overlap" in _bad_bank(tmp_path, {"conds": overlap})
    outside = good.clone()
    outside[:, :, 0, 0] = 0
    outside[:, 2, 0, 0] = 1
    assert "outside the brain" in _bad_bank(tmp_path, {"conds": outside})
    assert "[N, 4, H, W]" in _bad_bank(tmp_path, {"conds": good[:, :3].contiguous()})
    (tmp_path / "conds.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(DataError, match="not a readable safetensors"):
        BankConditions(tmp_path, 16)


def test_bank_from_nifti_label_maps(phantom_root: Path):
    bank = BankConditions(phantom_root / "site-2", 32)
    assert len(bank) >= 6
    _check(bank.draw(8, generator=torch.Generator().manual_seed(0)), 8, 32)


def test_bank_empty_folder(tmp_path: Path):
    with pytest.raises(DataError, match="no conds.safetensors"):
        BankConditions(tmp_path, 16)
    with pytest.raises(DataError, match="missing"):
        BankConditions(tmp_path / "nope", 16)


def test_factory(tmp_path: Path):
    assert isinstance(build_condition_source("procedural", size=16), ProceduralConditions)
    with pytest.raises(ConfigError, match="bank_dir"):
        build_condition_source("bank", size=16)
    with pytest.raises(ConfigError, match="sites provide"):
        build_condition_source("site", size=16)
    with pytest.raises(ConfigError, match="unknown condition source"):
        build_condition_source("atlas", size=16)


def _areas(conds: np.ndarray) -> dict[str, float]:
    a = conds.sum(axis=(2, 3))
    core = a[:, 1] + a[:, 3]
    return {"brain": a[:, 0].mean(), "whole tumour": a[:, 1:].sum(1).mean(), "core": core.mean(),
            "slices with a core": (core > 0).mean()}


def test_procedural_maps_match_the_phantoms_label_statistics(tmp_path: Path):
    """The procedural priors were fitted to the phantom (see conditions.py); if either drifts, a
    segmenter trained on synthetic pairs learns tumours of the wrong size (the first priors drew
    half the oedema)."""
    from secgan.data.dataset import load_site
    from secgan.data.phantom import write_phantom

    # many sites, few patients each: a site's tumour-size factor (0.7-1.3) averages out
    dirs = write_phantom(tmp_path, sites=8, patients=4, seed=3, size=32, slices=24)
    real = np.concatenate([load_site(d, split="train", image_size=32).all_slices()[1] for d in dirs])
    drawn = ProceduralConditions(32).draw(1000, generator=torch.Generator().manual_seed(0)).numpy()
    want, got = _areas(real), _areas(drawn)
    for key in want:
        assert 0.75 < got[key] / want[key] < 1.33, (key, got[key], want[key])
