"""gradient_only_rounds / d_steps at the site learner: gradient-only rounds leave D untouched, charge
nothing and are logged; the schedule survives a restart; a rebuild from the log prices them at zero;
``secgan ledger show`` and ``verify`` agree with the pure prediction."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from secgan.net.schema import GradientReply
from secgan.privacy import accounting as acc
from sites.learner import SiteLearner
from secgan.privacy.ledger import LEDGER_FILE
from secgan.privacy.policy import ACCOUNTED_FIELDS, PrivacyPolicy
from secgan.privacy.release_log import LOG_FILE, verify_chain, verify_release_log

from .privacy_helpers import IMAGE, MODEL, TRAIN, batches, dataset, policy

ROOT = Path(__file__).resolve().parents[3]


def make(state: Path, pol: PrivacyPolicy) -> SiteLearner:
    return SiteLearner(dataset=dataset(), policy=pol, model=MODEL, image=IMAGE, train=TRAIN, state_dir=state,
                       generator_seed=1)


def serve(site: SiteLearner, n: int, start: int = 0) -> None:
    for msg in list(batches(start + n))[start:]:
        assert isinstance(site.serve(msg), GradientReply)


def weights(site: SiteLearner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in site.discriminator.parameters()]


@pytest.mark.parametrize("mode", ["dpsgd", "off"])
def test_gradient_only_rounds_leave_d_untouched_charge_nothing_and_are_logged(tmp_path, mode):
    pol = policy(mode, gradient_only_rounds=2, d_steps=2)
    site = make(tmp_path / "site", pol)
    changed = []
    for msg in batches(6):
        before = weights(site)
        eps_before, steps_before = site.epsilon(), site.ledger.steps
        assert isinstance(site.serve(msg), GradientReply)
        changed.append(any(not torch.equal(a, b) for a, b in zip(before, weights(site))))
        if not changed[-1]:  # a gradient-only round: nothing charged
            assert site.ledger.steps == steps_before and site.epsilon() == eps_before
    assert changed == [True, False, False, True, False, False]
    chain = verify_chain(tmp_path / "site" / LOG_FILE)
    assert chain.entries == 6 and site.ledger.releases == 6
    assert chain.charged == ([2, 0, 0, 2, 0, 0] if mode == "dpsgd" else [0] * 6)
    assert site.ledger.steps == (4 if mode == "dpsgd" else 0)


def test_a_d_update_of_n_d_steps_charges_n_d_steps_each_on_a_fresh_sample(tmp_path):
    site = make(tmp_path / "site", policy("dpsgd", d_steps=3))
    samples = []
    real_rows = site._real_rows
    site._real_rows = lambda idx, **kw: (samples.append(tuple(idx)), real_rows(idx, **kw))[1]
    serve(site, 2)
    assert len(samples) == 6 and len(set(samples)) > 1
    q = site.sample_rate
    assert site.ledger.history == [(1.0, q, 6)] and site._dp.accountant.history == [(1.0, q, 6)]


def test_a_restart_in_the_middle_keeps_the_schedule(tmp_path):
    pol = policy("dpsgd", gradient_only_rounds=1, d_steps=2)
    state = tmp_path / "site"
    serve(make(state, pol), 3)
    again = make(state, pol)
    serve(again, 4, start=3)
    assert verify_chain(state / LOG_FILE).charged == [2, 0, 2, 0, 2, 0, 2]
    assert again.ledger.steps == pol.charged_steps(7) == 8 and again.ledger.releases == 7


def test_rebuild_from_the_log_prices_gradient_only_releases_at_zero(tmp_path):
    pol = policy("dpsgd", gradient_only_rounds=2, d_steps=2)
    state = tmp_path / "site"
    site = make(state, pol)
    serve(site, 5)
    want = site.ledger.to_dict()
    (state / LEDGER_FILE).unlink()
    again = make(state, pol)
    got = again.ledger.to_dict()
    assert got["history"] == want["history"] and got["steps"] == want["steps"] == 4
    assert got["releases"] == 5 and got["epsilon"] == pytest.approx(want["epsilon"], rel=1e-12)
    assert verify_release_log(state).ok


def test_a_ledger_behind_its_log_is_brought_up_by_the_steps_the_missing_entries_charged(tmp_path):
    pol = policy("dpsgd", gradient_only_rounds=1, d_steps=3)
    state, backup = tmp_path / "site", tmp_path / "ledger.json"
    site = make(state, pol)
    serve(site, 2)
    shutil.copy2(state / LEDGER_FILE, backup)
    serve(site, 5, start=2)
    shutil.copy2(backup, state / LEDGER_FILE)  # an older ledger restored over the live one
    again = make(state, pol)
    assert again.ledger.releases == 7 and again.ledger.steps >= pol.charged_steps(7) == 12
    assert again.ledger.steps == 12  # the missing entries are identified: charged what they were, no more
    assert verify_release_log(state).ok


def test_a_saved_discriminator_ahead_of_the_ledger_is_priced_at_n_d_steps_a_release(tmp_path):
    pol = policy("dpsgd", d_steps=4)
    state = tmp_path / "site"
    site = make(state, pol)
    serve(site, 2)
    site.save()
    (state / LEDGER_FILE).unlink()
    (state / LOG_FILE).unlink()
    again = make(state, pol)
    assert again.ledger.releases == 2 and again.ledger.steps >= 8


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "secgan", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_ledger_show_and_verify_agree_with_the_prediction(tmp_path):
    pol = policy("dpsgd", gradient_only_rounds=2, d_steps=3, noise_multiplier=1.2)
    state = tmp_path / "site"
    serve(make(state, pol), 7)
    steps = pol.charged_steps(7)
    assert steps == 9
    shown = _cli("ledger", "show", "--site-dir", str(state), "--json")
    assert shown.returncode == 0, shown.stderr
    out = json.loads(shown.stdout)
    q = 3 / 10
    assert out["steps"] == steps and out["releases"] == 7 and out["history"] == [[1.2, q, steps]]
    assert out["epsilon"] == pytest.approx(acc.epsilon_rdp(noise_multiplier=1.2, sample_rate=q, steps=steps, delta=1e-5))
    assert out["verification"]["ok"] and out["verification"]["steps"] == steps and out["verification"]["releases"] == 7
    text = _cli("ledger", "show", "--site-dir", str(state))
    assert text.returncode == 0 and f"steps/releases  {steps} / 7 (release log: 7 releases, {steps} charged steps" in text.stdout
    verified = _cli("ledger", "verify", "--site-dir", str(state), "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ledger_steps"] == steps
    # a ledger charging fewer steps than its log's releases were charged does not verify
    led = json.loads((state / LEDGER_FILE).read_text())
    led["history"][0][2] -= 1
    led["steps"] -= 1
    (state / LEDGER_FILE).write_text(json.dumps(led))
    bad = _cli("ledger", "verify", "--site-dir", str(state))
    assert bad.returncode == 1 and f"ledger charges {steps - 1} steps" in bad.stderr


def test_the_schedule_is_bound_to_the_ledger_and_default_hashes_are_unchanged():
    import hashlib

    from secgan.core.config import to_dict

    default = PrivacyPolicy()
    d = to_dict(default)
    old = hashlib.sha256(json.dumps({k: d[k] for k in ACCOUNTED_FIELDS}, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert default.accounting_hash() == old  # ledgers written before the schedule existed still open
    assert PrivacyPolicy(d_steps=2).accounting_hash() != old
    assert PrivacyPolicy(gradient_only_rounds=1).accounting_hash() != old
    assert PrivacyPolicy(slices_per_patient=4).accounting_hash() == old  # accounting unchanged by k
    # known answers: the hashes the previous release wrote into every ledger (so those ledgers still open)
    assert old == "2178ce4ce6d8ab129cfab3bc9c4a134535b8573a29881696e4bdc30babfb8b45"
    assert PrivacyPolicy(target_epsilon=3.0, expected_batch_size=16).accounting_hash() == \
        "a9d09c63ff2b6dd2e3fcfbabfd2ec0f0e77eb7adf839d83e4b734ff587155d15"
    # every accounted setting added since is bound once it leaves its default
    for kw in ({"accountant": "prv"}, {"release_stats": True}, {"stats_epsilon": 2.0}, {"stats_clip_norm": 1.0}):
        assert PrivacyPolicy(**kw).accounting_hash() != old, kw


def test_sanitize_refuses_the_schedule_at_config_time():
    for kw in ({"gradient_only_rounds": 1}, {"d_steps": 2}):
        with pytest.raises(ValueError, match="sanitize"):
            PrivacyPolicy(mode="sanitize", **kw)


def test_recover_prices_each_missing_release_at_the_most_steps_a_logged_release_was_charged(tmp_path):
    from secgan.privacy.recovery import recover

    pol = policy("dpsgd", d_steps=3)
    state, backup = tmp_path / "site", tmp_path / "ledger.json"
    site = make(state, pol)
    serve(site, 1)
    shutil.copy2(state / LEDGER_FILE, backup)
    serve(site, 3, start=1)
    del site
    shutil.copy2(backup, state / LEDGER_FILE)  # an older ledger ...
    lines = (state / LOG_FILE).read_text().splitlines()
    lines[1] = lines[1].replace('"round":1', '"round":7')  # ... and a broken log: which releases are missing is unknown
    (state / LOG_FILE).write_text("\n".join(lines) + "\n")
    out = recover(state)
    assert out["changed"] and out["releases"] == 4
    led = json.loads((state / LEDGER_FILE).read_text())
    assert led["steps"] >= pol.charged_steps(4) == 12  # never under-counted as one step a release
    assert verify_release_log(state).ok
