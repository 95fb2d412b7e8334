"""``secgan coordinator --config FILE [--resume]`` (also ``python -m coordinator``).

The edge: load and verify the configuration and the signed manifest, turn them into a
:class:`~coordinator.service.ServiceConfig`, run the service. Exit codes (:mod:`secgan.core.exitcodes`):
0 completed, 130 interrupted by SIGTERM/SIGINT (state saved; continue with ``--resume``), 3 stopped
for lack of a quorum, 2 any other stop or a refused start.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run the generator coordinator of a federation (CURVE ROUTER, routed or secure-sum AsynDGAN rounds)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="coordinator.toml (from `secgan provision`)")
    parser.add_argument("--resume", action="store_true", help="continue the run from state_dir's last checkpoint")
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always show a progress bar on stderr (default: only on a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")


def build_service_config(cfg, manifest, *, progress: bool | None = None):
    """CoordinatorConfig + verified Manifest -> ServiceConfig (keys read here, at the edge)."""
    from secgan.keys.curve import load_curve_keypair

    from coordinator.config import ServiceConfig

    public, secret = load_curve_keypair(cfg.keys_dir, cfg.key_name)
    return ServiceConfig(
        settings=cfg,
        server_public=public,
        server_secret=secret,
        site_keys={s.site_id: s.curve_public for s in manifest.sites},
        agreement_roster=manifest.agreement_roster() if cfg.aggregation == "secure-sum" else None,
        progress=progress,
    )


def run(args: argparse.Namespace) -> int:
    from secgan.core.errors import ConfigError
    from secgan.gan.checkpoint import CHECKPOINT_FILE

    from coordinator.config import load_coordinator_config, verify_coordinator_federation
    from coordinator.service import Coordinator

    cfg = load_coordinator_config(args.config)
    manifest = verify_coordinator_federation(cfg)
    checkpoint = Path(cfg.state_dir) / CHECKPOINT_FILE
    if checkpoint.exists() and not args.resume:
        raise ConfigError(f"{cfg.state_dir} already holds a checkpoint of run {cfg.run_id!r}: pass --resume to continue it")
    service = Coordinator(build_service_config(cfg, manifest, progress=args.progress), resume=args.resume)
    result = service.serve()
    return exit_code(result)


def exit_code(result: dict) -> int:
    """run.json's final status -> the process exit code."""
    from secgan.core import exitcodes

    if result["status"] == "completed":
        return exitcodes.OK
    if result["status"] == "interrupted":
        return exitcodes.INTERRUPTED
    if result.get("stop_reason") in ("quorum_lost", "quorum_impossible"):
        return exitcodes.QUORUM_LOST
    return exitcodes.USAGE
