"""What the site node's loop runs from, resolved at the CLI edge (``sites.cli``) from ``site.toml``
(:class:`secgan.settings.SiteConfig`) and the verified manifest: no file reading below it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secgan.core.spec import ImageSpec
from secgan.net.limits import WireLimits
from secgan.net.transport import SocketTuning


@dataclass(frozen=True)
class NodeConfig:
    """What the site loop needs, resolved at the CLI edge."""

    site_id: str
    endpoint: str
    client_public: bytes
    client_secret: bytes
    server_public: bytes  # pinned: the coordinator key from the verified manifest
    state_dir: Path
    image: ImageSpec
    policy_summary: dict[str, Any]
    accept_sources: tuple[str, ...]
    limits: WireLimits = field(default_factory=WireLimits)
    tuning: SocketTuning = field(default_factory=SocketTuning)
    heartbeat_s: float = 1.0
    hello_retry_s: float = 2.0
    status_every_s: float = 5.0
    # silence (no inbound message) for this many heartbeat intervals: reopen the DEALER, Hello again
    dead_link_heartbeats: int = 10
    # silence this long: warn "no answer from <endpoint>", again every this often
    no_answer_warn_s: float = 60.0
    # a run whose steps differ from the calibrated plan: "warn" or "refuse"
    on_steps_mismatch: str = "warn"
