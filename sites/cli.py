"""``secgan site --config FILE [--data DIR]`` (also ``python -m sites``).

The edge: load site.toml, verify the signed manifest (which pins the coordinator's CURVE key),
take the exclusive lock on its state folder (held for the life of the process: a second start on
the same state is refused, naming the holder's pid), load this site's training split (its folder's
layout, read into images and conditions of the site's ``[image]`` spec: brain volumes, nuclei tiles
or an ISIC-style lesion folder, ``secgan.data.dataset.load_site``), build its learner and run the
node. Exit codes: 0 after Stop, SIGTERM or SIGINT; 2 a refused start (state in
use, ledger or release log broken or behind) or a protocol/image mismatch; 3 the coordinator's
condition source is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Callable

HELP = "run a site node: local data, discriminator, the site's own privacy policy and budget"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="site.toml (from `secgan provision`)")
    parser.add_argument("--data", type=Path, default=None, help="override data_dir (a BraTS/MSD folder, RGB tiles with masks or an ISIC-style folder; "
                             "with split.json)")


def build_learner(cfg: Any, dataset: Any) -> Any:
    """The site's learner: every mode, "off" included, goes through
    ``sites.learner.SiteLearner`` (ledger before release, refusal past the budget), which
    keeps its own durable state in the state folder."""
    from sites.learner import SiteLearner

    return SiteLearner(dataset=dataset, policy=cfg.policy, model=cfg.model, image=cfg.image, train=cfg.train,
                       state_dir=Path(cfg.state_dir), generator_seed=cfg.seed, device=cfg.device)


def build_secure_sum(cfg: Any, manifest: Any) -> Callable[[str], Any] | None:
    """run id -> SecureSumClient, with every participant key taken from the manifest this site
    verified itself; None when the kit has no agreement key for this site (routed runs only)."""
    path = Path(cfg.agreement_key_path)
    entry = manifest.site(cfg.site_id)
    if not path.exists() or entry is None or entry.x25519_public is None:
        return None
    if any(s.x25519_public is None for s in manifest.sites):
        return None
    from secgan.core.errors import ConfigError
    from secgan.keys.agreement import load_agreement_key
    from secgan.core.logs import get_logger
    from secgan.secagg import SecureSumClient, resolve_threshold

    key = load_agreement_key(path)
    roster = manifest.agreement_roster()
    try:
        resolve_threshold(cfg.policy.secure_sum_threshold, len(roster))
    except ConfigError as exc:  # routed runs still work; a secure-sum Welcome ends this site with a reason
        get_logger(__name__).warning("secure_sum_unavailable", reason=str(exc)[:200])
        return None

    def factory(run_id: str) -> Any:
        return SecureSumClient(site_id=cfg.site_id, agreement_key=key, roster=roster, run_id=run_id,
                               policy_threshold=cfg.policy.secure_sum_threshold)

    return factory


def open_site(cfg: Any) -> tuple[Any, Any]:
    """Everything ``secgan site`` does before serving, for one loaded SiteConfig: verify the signed
    manifest, load the CURVE keys, take the state lock (released again if anything after it
    fails), load the training split, build the learner and the node. -> (SiteNode, StateLock);
    the caller serves the node and releases the lock. Shared with ``sites.host``."""
    from secgan.data.dataset import load_site
    from secgan.keys.curve import load_curve_keypair
    from secgan.core.logs import get_logger
    from secgan.privacy.statelock import StateLock

    from sites.config import NodeConfig
    from sites.node import SiteNode
    from secgan.settings import verify_site_federation

    manifest = verify_site_federation(cfg)  # also checks the pinned coordinator key against the manifest
    public, secret = load_curve_keypair(cfg.keys_dir, cfg.curve_key_name)
    Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)
    state_lock = StateLock.acquire(cfg.state_dir)  # before anything reads or writes the state; held until exit
    try:
        dataset = load_site(Path(cfg.data_dir), split=cfg.split, image_size=cfg.image.size, image=cfg.image, skip_bad=cfg.skip_bad,
                            **cfg.read.load_kwargs())
        learner = build_learner(cfg, dataset)
        get_logger(__name__).info("site_ready", site=cfg.site_id, patient_count=dataset.n_patients,
                                  mode=cfg.policy.mode)
        node = SiteNode(
            NodeConfig(settings=cfg, client_public=public, client_secret=secret,
                       server_public=manifest.coordinator.curve_public),
            learner,
            secure_sum=build_secure_sum(cfg, manifest),
        )
    except BaseException:
        state_lock.release()
        raise
    return node, state_lock


def run(args: argparse.Namespace) -> int:
    from secgan.settings import load_site_config

    cfg = load_site_config(args.config)
    if args.data is not None:
        cfg = dataclasses.replace(cfg, data_dir=str(args.data.expanduser().resolve()))
    node, state_lock = open_site(cfg)
    try:
        return node.serve()
    finally:
        state_lock.release()
