"""A site cannot be poisoned for good: out-of-range batches are refused before the ledger is charged,
a non-finite update is rolled back (D and its optimiser), and a poisoned D is never restored."""

from __future__ import annotations

import pytest
import torch

from secgan.gan.checkpoint import save_module_state
from secgan.core.errors import ProtocolError
from secgan.net.schema import FakeBatch, GradientReply, Refusal
from sites.learner import SiteLearner
from secgan.privacy.release_log import LOG_FILE
from secgan.privacy.sanitize import clip_rows

from .privacy_helpers import IMAGE, MODEL, TRAIN, batches, dataset, policy

MODES = ("dpsgd", "sanitize", "off")


def make(tmp_path, pol, *, sub="site"):
    return SiteLearner(dataset=dataset(), policy=pol, model=MODEL, image=IMAGE, train=TRAIN,
                       state_dir=tmp_path / sub, generator_seed=1)


def _logged(tmp_path, sub="site") -> int:
    path = tmp_path / sub / LOG_FILE
    return len(path.read_text().splitlines()) if path.exists() else 0


def _parts(site, i=0):
    """D_i without its Opacus wrapper and the torch optimiser that owns its state."""
    module, opt = site._modules[i]
    return getattr(module, "_module", module), getattr(opt, "original_optimizer", opt)


def _finite(site) -> bool:
    for i in range(len(site._modules)):
        module, opt = _parts(site, i)
        tensors = [*module.state_dict().values()]
        tensors += [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
        if not all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()):
            return False
    return True


def _poisoned(msg: FakeBatch, *, field: str, value: float) -> FakeBatch:
    t = getattr(msg, field).clone()
    t[0, 0, 0, 0] = value
    return FakeBatch(run_id=msg.run_id, round=msg.round, step=msg.step, attempt=msg.attempt,
                     **{"cond": msg.cond, "fake": msg.fake, field: t})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("field,value", [("fake", 3e38), ("fake", -3e38), ("fake", 1.5), ("cond", 2.0),
                                         ("cond", -0.25), ("cond", 3e38)])
def test_out_of_range_batch_is_refused_before_the_ledger_is_charged(tmp_path, mode, field, value):
    site = make(tmp_path, policy(mode))
    good = list(batches(3))
    assert isinstance(site.serve(good[0]), GradientReply)
    charged = site.ledger.releases
    with pytest.raises(ProtocolError) as exc:
        site.serve(_poisoned(good[1], field=field, value=value))
    assert exc.value.code == "out_of_range" and field in exc.value.detail
    assert site.ledger.releases == charged and _finite(site)
    reply = site.serve(good[2])  # and it keeps serving normal batches with finite gradients
    assert isinstance(reply, GradientReply) and bool(torch.isfinite(reply.grad).all())
    assert site.ledger.releases == charged + 1


def _state(site, i=0):
    module, opt = _parts(site, i)
    return ({k: v.clone() for k, v in module.state_dict().items()},
            {k: {n: v.clone() for n, v in st.items() if isinstance(v, torch.Tensor)} for k, st in opt.state.items()})


def _same(a, b) -> bool:
    return (a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
            and a[1].keys() == b[1].keys() and all(torch.equal(a[1][p][n], b[1][p][n]) for p in a[1] for n in a[1][p]))


def _poison_next_step(site) -> list[int]:
    """Fault injection: every optimiser's next step leaves one parameter NaN (once)."""
    fired: list[int] = []
    handles = []
    for i in range(len(site._modules)):
        module, opt = _parts(site, i)

        def hook(_opt, _args, _kwargs, module=module, i=i):
            if not fired:
                fired.append(i)
                with torch.no_grad():
                    next(module.parameters()).view(-1)[0] = float("nan")
        handles.append(opt.register_step_post_hook(hook))
    return fired


@pytest.mark.parametrize("mode", MODES)
def test_a_non_finite_update_is_rolled_back_and_the_site_keeps_serving(tmp_path, mode):
    # sanitize accounts q = 1 per release (no shard amplification): more noise, so that four
    # releases stay inside the helper's budget
    site = make(tmp_path, policy(mode, **({"noise_multiplier": 20.0} if mode == "sanitize" else {})))
    msgs = list(batches(4))
    assert isinstance(site.serve(msgs[0]), GradientReply)
    before = [_state(site, i) for i in range(len(site._modules))]
    logged = _logged(tmp_path)
    fired = _poison_next_step(site)
    reply = site.serve(msgs[1])
    assert fired, "the fault was not injected"
    assert _finite(site)
    assert all(_same(before[i], _state(site, i)) for i in range(len(site._modules)))  # back to the last good state
    if mode == "sanitize":
        # a refusal would be a function of the non-private shard D: the release goes ahead through
        # the rolled-back D_k, clipped and noised like any other
        assert isinstance(reply, GradientReply) and bool(torch.isfinite(reply.grad).all())
    else:
        assert isinstance(reply, Refusal) and reply.code == "non_finite" and not reply.final
    assert site.ledger.releases == 2  # charged: over-counts a discarded step, never under-counts
    for m in msgs[2:]:  # not charged forever: later steps are served normally
        r = site.serve(m)
        assert isinstance(r, GradientReply) and bool(torch.isfinite(r.grad).all())
    assert site.ledger.releases == 4 and _finite(site)
    assert _logged(tmp_path) == logged + (3 if mode == "sanitize" else 2)  # nothing logged for the discarded step


def test_a_dpsgd_update_that_overflows_is_discarded_and_never_saved(tmp_path):
    # noise so large that the DP step itself overflows float32: no D state survives it
    site = make(tmp_path, policy("dpsgd", noise_multiplier=1e38))
    before = _state(site)
    replies = [site.serve(m) for m in batches(3)]
    assert all(isinstance(r, Refusal) and r.code == "non_finite" for r in replies)
    assert _same(before, _state(site)) and _finite(site)
    site.save()
    again = make(tmp_path, policy("dpsgd", noise_multiplier=1e38))
    assert _finite(again) and again.ledger.releases == 3
    assert _logged(tmp_path) == 0  # nothing was released


@pytest.mark.parametrize("mode", MODES)
def test_a_restart_does_not_restore_a_poisoned_discriminator(tmp_path, mode):
    site = make(tmp_path, policy(mode))
    for m in batches(2):
        site.serve(m)
    fresh = make(tmp_path, policy(mode), sub="fresh")  # the data-independent initialisation
    # a D state file as an older version could have left it: NaN weights (and optimiser state)
    for i, (module, opt) in enumerate(site._modules):
        with torch.no_grad():
            for p in _parts(site, i)[0].parameters():
                p.fill_(float("nan"))
        save_module_state(site._state_file(i), module, opt, {"mode": mode, "releases": site.ledger.releases})
    again = make(tmp_path, policy(mode))
    assert _finite(again) and again.ledger.releases == 2
    for i in range(len(again._modules)):
        assert _same(_state(fresh, i)[:1] + ({},), _state(again, i)[:1] + ({},))
    reply = again.serve(next(iter(batches(1, seed=5))))
    assert isinstance(reply, GradientReply) and bool(torch.isfinite(reply.grad).all())


def test_clip_rows_turns_non_finite_rows_into_zeros():
    g = torch.ones(3, 4, 2, 2)
    g[1, 0, 0, 0] = float("nan")
    g[2, 1, 1, 1] = float("inf")
    out = clip_rows(g, 1.0)
    assert bool(torch.isfinite(out).all())
    assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.equal(out[2], torch.zeros_like(out[2]))
    assert out[0].norm() == pytest.approx(1.0)
