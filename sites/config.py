"""What the site node's loop runs from: its settings (``site.toml``, :class:`secgan.settings.SiteConfig`,
unchanged) and what the CLI edge (``sites.cli``) read from files for them: this site's CURVE key
pair and the coordinator key pinned by the verified manifest. No file reading below it, and no
setting copied."""

from __future__ import annotations

from dataclasses import dataclass

from secgan.settings import SiteConfig


@dataclass(frozen=True)
class NodeConfig:
    """A site's settings plus the keys its socket needs, resolved at the CLI edge."""

    settings: SiteConfig
    client_public: bytes
    client_secret: bytes
    server_public: bytes  # pinned: the coordinator key from the verified manifest
