"""The durable ledger and the hash-chained release log."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from secgan.core.errors import BudgetExhausted, PrivacyError
from secgan.privacy import accounting as acc
from secgan.privacy.ledger import LEDGER_FILE, LedgerParams, PrivacyLedger
from secgan.privacy.release_log import LOG_FILE, ReleaseLog, verify_release_log

PARAMS = LedgerParams(
    mode="dpsgd", delta=1e-5, target_epsilon=10.0, clip_norm=1.0, dataset_fingerprint="ab" * 32, policy_hash="cd" * 32
)


def test_reserve_is_durable_and_matches_accounting(tmp_path):
    led = PrivacyLedger.open(tmp_path, params=PARAMS)
    assert led.epsilon == 0.0 and led.releases == 0
    for _ in range(3):
        led.reserve_step(noise_multiplier=1.5, sample_rate=0.1)
    led.reserve_step(noise_multiplier=2.0, sample_rate=0.1)
    on_disk = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert on_disk["history"] == [[1.5, 0.1, 3], [2.0, 0.1, 1]]
    assert on_disk["releases"] == 4 and on_disk["steps"] == 4
    want = acc.epsilon_from_history([(1.5, 0.1, 3), (2.0, 0.1, 1)], delta=1e-5)
    assert on_disk["epsilon"] == pytest.approx(want, rel=1e-12)
    for key in ("delta", "target_epsilon", "clip_norm", "mode", "accountant", "accountant_version", "dataset_fingerprint", "policy_hash"):
        assert key in on_disk
    again = PrivacyLedger.open(tmp_path, params=PARAMS)
    assert again.epsilon == pytest.approx(want) and again.history == led.history


def test_budget_exhausted_writes_nothing(tmp_path):
    led = PrivacyLedger.open(tmp_path, params=dataclasses.replace(PARAMS, target_epsilon=0.5))
    n = 0
    with pytest.raises(BudgetExhausted) as info:
        while True:
            led.reserve_step(noise_multiplier=3.0, sample_rate=0.05)
            n += 1
    assert n >= 1 and info.value.epsilon_after > 0.5
    before = (tmp_path / LEDGER_FILE).read_bytes()
    with pytest.raises(BudgetExhausted):
        led.reserve_step(noise_multiplier=3.0, sample_rate=0.05)
    assert (tmp_path / LEDGER_FILE).read_bytes() == before
    assert PrivacyLedger.read(tmp_path).releases == n and led.epsilon <= 0.5


@pytest.mark.parametrize(
    "field,value",
    [
        ("dataset_fingerprint", "ef" * 32),
        ("mode", "sanitize"),
        ("delta", 1e-6),
        ("target_epsilon", 3.0),
        ("clip_norm", 0.5),
        ("policy_hash", "00" * 32),
        ("accountant_version", "opacus-1.6.0+secgan-rdp-999"),
    ],
)
def test_restart_with_other_data_or_parameters_is_refused(tmp_path, field, value):
    PrivacyLedger.open(tmp_path, params=PARAMS).reserve_step(noise_multiplier=1.0, sample_rate=0.1)
    with pytest.raises(PrivacyError, match="accounting scheme" if field == "accountant_version" else repr(field)):
        PrivacyLedger.open(tmp_path, params=dataclasses.replace(PARAMS, **{field: value}))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: b"{not json",
        lambda d: d[: len(d) // 2],
        lambda d: json.dumps({**json.loads(d), "history": [[1.0, 0.1]]}).encode(),
        lambda d: json.dumps({**json.loads(d), "steps": 7}).encode(),
        lambda d: json.dumps({k: v for k, v in json.loads(d).items() if k != "delta"}).encode(),
    ],
)
def test_corrupt_ledger_is_a_clear_error_never_a_reset(tmp_path, mangle):
    PrivacyLedger.open(tmp_path, params=PARAMS).reserve_step(noise_multiplier=1.0, sample_rate=0.1)
    path = tmp_path / LEDGER_FILE
    path.write_bytes(mangle(path.read_bytes()))
    before = path.read_bytes()
    with pytest.raises(PrivacyError, match="corrupt"):
        PrivacyLedger.open(tmp_path, params=PARAMS)
    assert path.read_bytes() == before


def test_stored_epsilon_never_goes_down_on_open(tmp_path):
    PrivacyLedger.open(tmp_path, params=PARAMS).reserve_step(noise_multiplier=1.0, sample_rate=0.1)
    path = tmp_path / LEDGER_FILE
    data = json.loads(path.read_text())
    data["epsilon"] = 9.9  # e.g. written by an older, more pessimistic accountant
    path.write_text(json.dumps(data))
    assert PrivacyLedger.open(tmp_path, params=PARAMS).epsilon == 9.9


def test_mode_off_counts_releases_without_epsilon(tmp_path):
    led = PrivacyLedger.open(tmp_path, params=dataclasses.replace(PARAMS, mode="off"))
    assert led.reserve_step(noise_multiplier=None, sample_rate=None) is None
    assert PrivacyLedger.read(tmp_path).releases == 1


def _log_some(tmp_path, n=3):
    led = PrivacyLedger.open(tmp_path, params=PARAMS)
    rl = ReleaseLog(tmp_path)
    for i in range(n):
        eps = led.reserve_step(noise_multiplier=1.0, sample_rate=0.05)
        rl.append(step=i, round=i, run_id="r", tensors={"grad": torch.full((2, 4, 16, 16), float(i))}, epsilon_after=eps)
    return led, rl


def test_release_log_verifies(tmp_path):
    _log_some(tmp_path)
    res = verify_release_log(tmp_path)
    assert res.ok, res.problems
    assert res.entries == 3 and res.ledger_releases == 3


@pytest.mark.parametrize("how", ["edit", "delete", "swap"])
def test_release_log_tampering_is_detected(tmp_path, how):
    _log_some(tmp_path)
    path = tmp_path / LOG_FILE
    lines = path.read_text().splitlines()
    if how == "edit":
        e = json.loads(lines[1])
        e["epsilon_after"] = 0.0001
        lines[1] = json.dumps(e, sort_keys=True, separators=(",", ":"))
    elif how == "delete":
        del lines[1]
    else:
        lines[0], lines[1] = lines[1], lines[0]
    path.write_text("\n".join(lines) + "\n")
    res = verify_release_log(tmp_path)
    assert not res.ok and res.problems
    with pytest.raises(PrivacyError, match="release log is broken"):
        ReleaseLog(tmp_path)


def test_ledger_under_counting_is_detected(tmp_path):
    _log_some(tmp_path)
    rl = ReleaseLog(tmp_path)
    rl.append(step=9, round=9, run_id="r", tensors={"grad": torch.zeros(1)}, epsilon_after=5.0)  # not reserved
    res = verify_release_log(tmp_path)
    assert not res.ok
    assert any("ledger counts 3 releases but the log holds 4" in p for p in res.problems)
    assert any("below the largest logged epsilon" in p for p in res.problems)


def test_torn_last_line_is_dropped_on_open(tmp_path):
    _log_some(tmp_path, n=2)
    path = tmp_path / LOG_FILE
    path.write_bytes(path.read_bytes() + b'{"step": 2, "rou')
    rl = ReleaseLog(tmp_path)
    assert rl.entries == 2 and verify_release_log(tmp_path).ok
