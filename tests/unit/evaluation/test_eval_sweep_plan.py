"""Sweep planning: settings, GAN run configs and what each setting's saved result depends on."""

from __future__ import annotations

from pathlib import Path

from secgan.evaluation.sweep_config import SweepConfig
from secgan.evaluation.sweep_plan import gan_run_config, planned_settings



def test_dp_runs_can_have_their_own_step_count():
    import dataclasses

    cfg = SweepConfig()
    cfg = dataclasses.replace(cfg, gan=dataclasses.replace(cfg.gan, steps=800),
                              privacy=dataclasses.replace(cfg.privacy, steps=300))
    dp = gan_run_config(cfg, [Path("site-1")], epsilon=3.0, run=1)
    assert dp.train.steps == dp.privacy.planned_steps == 300 and dp.train.seed == cfg.gan.seed + 1
    assert dp.run_id == "asyndgan-dp-eps3-run1"
    assert gan_run_config(cfg, [Path("site-1")], epsilon=None).train.steps == 800


def test_default_epsilons_and_settings():
    cfg = SweepConfig()
    assert cfg.privacy.epsilons == (1.0, 3.0, 10.0)
    assert planned_settings(cfg, [1, 2]) == [
        "real-all", "real-subset-1", "real-subset-2", "syn-all", "asyndgan", "public-only",
        "asyndgan-dp-eps1", "asyndgan-dp-eps3", "asyndgan-dp-eps10",
        "real-subset-1+synthetic", "real-subset-2+synthetic",
        "missing-flair-site-1", "missing-flair-site-1-completed",
    ]


def test_each_setting_depends_only_on_its_own_part_of_the_config():
    """A resumed sweep reuses a saved result only when its inputs are unchanged: what a setting's
    fingerprint covers, and what it must not (so unrelated edits do not force recomputation)."""
    import dataclasses as dc

    from secgan.evaluation.sweep_plan import inputs_fingerprint

    base = SweepConfig()
    names = planned_settings(base, [1, 2])

    def changed(cfg):
        return {n for n in names if inputs_fingerprint(cfg, n) != inputs_fingerprint(base, n)}

    assert changed(base) == set()
    assert changed(dc.replace(base, device="cuda")) == set()
    assert changed(dc.replace(base, segmenter=dc.replace(base.segmenter, device="cuda"))) == set()
    assert changed(dc.replace(base, seeds=(0, 1, 2))) == set(names)
    assert changed(dc.replace(base, segmenter=dc.replace(base.segmenter, lr=1e-3))) == set(names)
    gan_users = {n for n in names if n not in ("real-all", "real-subset-1", "real-subset-2")}
    assert changed(dc.replace(base, gan=dc.replace(base.gan, steps=301))) == gan_users
    # more GANs per setting: only the GAN rows (the others use the first GAN)
    gan_rows = {"syn-all", "asyndgan", "public-only", "asyndgan-dp-eps1", "asyndgan-dp-eps3", "asyndgan-dp-eps10"}
    assert changed(dc.replace(base, gan=dc.replace(base.gan, runs=2))) == gan_rows
    # another epsilon added: no existing setting changes; the DP budget knobs change the DP rows only
    more = dc.replace(base, privacy=dc.replace(base.privacy, epsilons=(1.0, 3.0, 10.0, 30.0)))
    assert changed(more) == set()
    dp_rows = {"asyndgan-dp-eps1", "asyndgan-dp-eps3", "asyndgan-dp-eps10"}
    assert changed(dc.replace(base, privacy=dc.replace(base.privacy, clip_norm=0.5))) == dp_rows
    mm = dc.replace(base, missing_modality=dc.replace(base.missing_modality, draws=8))
    assert changed(mm) == {"missing-flair-site-1", "missing-flair-site-1-completed"}
    assert changed(dc.replace(base, phantom=dc.replace(base.phantom, seed=99))) == set(names)
    # the public side: the cohort changes the public-only row alone while no run starts pretrained ...
    pub = dc.replace(base, public=dc.replace(base.public, patients=30))
    assert changed(pub) == {"public-only"}
    assert changed(dc.replace(base, public=dc.replace(base.public, freeze_d_stages=2))) == set()
    # ... and with privacy.pretrained the DP rows too (they start from it), AsynDGAN only when asked
    pre = dc.replace(base, privacy=dc.replace(base.privacy, pretrained=True))
    assert changed(pre) == dp_rows
    for cfg_with, extra in ((pre, set()), (dc.replace(pre, public=dc.replace(pre.public, asyndgan=True)), {"asyndgan"})):
        assert {n for n in names if inputs_fingerprint(dc.replace(cfg_with, public=dc.replace(
            cfg_with.public, patients=30)), n) != inputs_fingerprint(cfg_with, n)} == {"public-only"} | dp_rows | extra
    frozen = dc.replace(pre, public=dc.replace(pre.public, freeze_d_stages=1))
    assert {n for n in names if inputs_fingerprint(frozen, n) != inputs_fingerprint(pre, n)} == dp_rows
    # no public row when disabled
    assert "public-only" not in planned_settings(dc.replace(base, public=dc.replace(base.public, enabled=False)), [1])
