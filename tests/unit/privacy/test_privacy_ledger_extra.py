"""Ledger annotations and the accounting module's independence from an Opacus import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from secgan.core.errors import PrivacyError
from secgan.privacy import accounting
from secgan.privacy.ledger import LEDGER_FILE, LedgerParams, PrivacyLedger


def _params() -> LedgerParams:
    return LedgerParams(mode="dpsgd", delta=1e-5, target_epsilon=5.0, clip_norm=1.0, dataset_fingerprint="f" * 64,
                        policy_hash="p" * 16, accountant=accounting.ACCOUNTANT,
                        accountant_version=accounting.ACCOUNTANT_VERSION)


def test_annotate_is_durable_and_cannot_touch_the_accounting(tmp_path: Path) -> None:
    ledger = PrivacyLedger.open(tmp_path, params=_params())
    ledger.reserve_step(noise_multiplier=1.0, sample_rate=0.1)
    ledger.annotate("distributed_noise", {"threshold": 3})
    on_disk = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert on_disk["distributed_noise"] == {"threshold": 3} and on_disk["releases"] == 1
    for key in ("epsilon", "history", "releases", "target_epsilon", "delta"):
        with pytest.raises(PrivacyError, match=key):
            ledger.annotate(key, 0)
    ledger.reserve_step(noise_multiplier=1.0, sample_rate=0.1)  # later spending keeps the note
    assert PrivacyLedger.read(tmp_path).to_dict()["distributed_noise"] == {"threshold": 3}


def test_orders_match_opacus() -> None:
    from opacus.accountants import RDPAccountant

    assert accounting.ORDERS == tuple(RDPAccountant.DEFAULT_ALPHAS)
    import opacus

    assert accounting.ACCOUNTANT_VERSION.startswith(f"opacus-{opacus.__version__}+")


def test_importing_the_ledger_does_not_import_opacus() -> None:
    code = "import sys, secgan.privacy.ledger, sites.learner; print('opacus' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
