"""The site's configuration file, ``site.toml``, and what configuration files have in common.

The site's config lives here, in the library, and not in ``sites/``, because two roles read it:
the site node and the site's auditor (``audits/``, which runs where the data is and never imports
``sites/``). The coordinator's ``coordinator.toml`` is ``coordinator.config.CoordinatorConfig``.

Both load into frozen dataclasses through :func:`load_config_file` (:func:`secgan.core.config.load_dataclass`),
so an unknown key, a wrong type or an out-of-range value is a ConfigError naming the dotted key.
Relative paths are resolved against the folder of the config file and stored as absolute strings.
Checks that cross fields (loopback unless ``allow_remote``, ...) also name their keys.

:func:`verify_site_federation` is what a site calls at start, before opening a socket: it verifies
the signed manifest against the coordinator's Ed25519 key and checks that the local key files are
the ones the manifest lists.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secgan.core.config import choices, load_dataclass, read_toml, rng
from secgan.core.errors import ConfigError
from secgan.privacy.policy import PrivacyPolicy
from secgan.gan.config import ModelConfig, TrainConfig
from secgan.core.spec import ImageSpec
from secgan.data.options import ReadOptions
from secgan.core.ids import SITE_ID_RE
from secgan.net.transport import SocketTuning
from secgan.net.limits import WireLimits

if TYPE_CHECKING:
    from secgan.keys.manifest import Manifest

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
HOST_RE = re.compile(r"[A-Za-z0-9.\-]{1,253}|[0-9a-fA-F:]{2,39}")
_ENDPOINT_RE = re.compile(r"tcp://([A-Za-z0-9.\-]{1,253}|\[[0-9a-fA-F:]{2,39}\]):([0-9]{1,5})")

POSITIVE = rng(min=0.0, min_exclusive=True)


def endpoint_host(endpoint: str) -> str | None:
    m = _ENDPOINT_RE.fullmatch(endpoint)
    if m is None or not 0 < int(m.group(2)) < 65536:
        return None
    return m.group(1).strip("[]")


@dataclass(frozen=True)
class SiteConfig:
    """A site node. ``model``/``train`` shape and train this site's discriminator (``train.lr_d``,
    ``train.loss``, betas; ``train.batch_size`` is the plain-mode batch); ``policy`` is the site's
    own privacy policy, which the coordinator can read a summary of but never change."""

    # this site's id in the manifest (its CURVE key, not this name, identifies it)
    site_id: str
    data_dir: str  # the site's data with split.json: BraTS/MSD volumes, RGB tiles + masks, or ISIC-style
    # train on the train patients of split.json (held-out ones stay for audits) or on all
    split: str = field(default="train", metadata=choices("train", "all"))
    # skip a malformed case with a warning instead of refusing to start
    skip_bad: bool = False
    # how data_dir is read (layout, tolerances, voxel size, crop): [read]; `secgan data check` takes the same
    read: ReadOptions = field(default_factory=ReadOptions)
    state_dir: str = "state"  # ledger, release log, D checkpoints
    keys_dir: str = "keys"  # holds <site_id>.key and <site_id>.key_secret (CURVE)
    key_name: str | None = None  # default: site_id
    # X25519 secure-sum agreement key (PEM, 0600); default keys_dir/<key name>.x25519
    agreement_key: str | None = None
    signing_key: str = "signing.pem"  # Ed25519, signs this site's audit reports
    # tcp://HOST:PORT of the coordinator
    coordinator_endpoint: str = "tcp://127.0.0.1:5555"
    coordinator_public_key: str = "coordinator.key"  # pinned CURVE key of the coordinator
    coordinator_signing_key: str = "coordinator-signing.pub"  # verifies the manifest
    # the signed federation manifest; verified against coordinator_signing_key at every start
    manifest: str = "manifest.json"
    # must be true to connect to anything but loopback
    allow_remote: bool = False
    # seeds D's initialisation and non-DP sampling; DP noise never comes from it (policy.reproducible_noise)
    seed: int = field(default=0, metadata=rng(min=0, max=2**63 - 1))
    # where D runs: cpu or cuda
    device: str = field(default="cpu", metadata=choices("cpu", "cuda"))
    # how often the site tells the coordinator it is alive
    heartbeat_interval_s: float = field(default=1.0, metadata=POSITIVE)
    # Hello is re-sent this often until the coordinator answers Welcome
    hello_retry_s: float = field(default=2.0, metadata=POSITIVE)
    # how often state_dir/site.json is rewritten
    status_every_s: float = field(default=5.0, metadata=POSITIVE)
    # no message from the coordinator for this many heartbeat intervals: reconnect and say Hello again
    dead_link_heartbeats: int = field(default=10, metadata=rng(min=2, max=10000))
    # no message from the coordinator for this long: warn (and again every this often)
    no_answer_warn_s: float = field(default=60.0, metadata=POSITIVE)
    image: ImageSpec = field(default_factory=ImageSpec)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    policy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    wire: WireLimits = field(default_factory=WireLimits)
    tuning: SocketTuning = field(default_factory=SocketTuning)

    def __post_init__(self) -> None:
        if SITE_ID_RE.fullmatch(self.site_id) is None:
            raise ValueError("site_id: must be 1-64 of [a-z0-9_-], starting with a letter or digit")
        if self.key_name is not None and SITE_ID_RE.fullmatch(self.key_name) is None:
            raise ValueError("key_name: must be 1-64 of [a-z0-9_-]")
        host = endpoint_host(self.coordinator_endpoint)
        if host is None:
            raise ValueError("coordinator_endpoint: must look like tcp://HOST:PORT")
        if host not in LOOPBACK_HOSTS and not self.allow_remote:
            raise ValueError(
                f"coordinator_endpoint host {host!r} is not loopback; set allow_remote = true to connect over a network"
            )
        if self.train.l1_weight > 0 and self.policy.mode != "off":
            raise ValueError("train.l1_weight > 0 compares fakes with real images; it needs policy.mode = 'off'")
        try:
            self.model.check_fits(self.image)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @property
    def curve_key_name(self) -> str:
        return self.key_name or self.site_id

    @property
    def agreement_key_path(self) -> Path:
        if self.agreement_key is not None:
            return Path(self.agreement_key)
        return Path(self.keys_dir) / f"{self.curve_key_name}.x25519"


SITE_PATH_KEYS = (
    "data_dir", "state_dir", "keys_dir", "signing_key", "coordinator_public_key", "coordinator_signing_key", "manifest",
    "agreement_key",
)


def _resolve(cfg: Any, keys: tuple[str, ...], base: Path) -> Any:
    changes = {}
    for k in keys:
        value = getattr(cfg, k)
        if value is None:
            continue
        if not value:
            raise ConfigError(f"{k}: must not be empty")
        p = Path(value).expanduser()
        changes[k] = str(p if p.is_absolute() else (base / p).resolve())
    return dataclasses.replace(cfg, **changes)


def load_config_file(cls: type, path: str | Path, keys: tuple[str, ...]) -> Any:
    path = Path(path)
    data = read_toml(path)
    try:
        cfg = load_dataclass(cls, data)
        cfg = _resolve(cfg, keys, path.parent.resolve())
        train = getattr(cfg, "train", None)
        if train is not None and train.init_from:  # a pretrain folder, relative to the config file too
            cfg = dataclasses.replace(cfg, train=_resolve(train, ("init_from",), path.parent.resolve()))
        return cfg
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_site_config(path: str | Path) -> SiteConfig:
    return load_config_file(SiteConfig, path, SITE_PATH_KEYS)


# ---------------------------------------------------------------------------------------------
# start-up checks against the signed manifest


def verify_site_federation(cfg: SiteConfig) -> "Manifest":
    """Verify the manifest with the coordinator's signing key (pinned in the site's kit), and
    check that the pinned coordinator CURVE key and this site's own keys are those it lists."""
    from secgan.keys.agreement import load_agreement_key, public_hex
    from secgan.keys.curve import load_curve_keypair, load_curve_public
    from secgan.keys.manifest import load_manifest
    from secgan.keys.signing import load_signing_key, load_verify_key, public_raw

    verify_key = load_verify_key(cfg.coordinator_signing_key)
    manifest = load_manifest(cfg.manifest, coordinator_verify_key=verify_key)
    pinned = load_curve_public(cfg.coordinator_public_key)
    if pinned != manifest.coordinator.curve_public:
        raise ConfigError("coordinator_public_key: not the coordinator key listed in the manifest")
    entry = manifest.site(cfg.site_id)
    if entry is None:
        raise ConfigError(f"site_id = {cfg.site_id!r} is not a member of federation {manifest.federation!r}")
    public, _ = load_curve_keypair(cfg.keys_dir, cfg.curve_key_name)
    if public != entry.curve_public:
        raise ConfigError(f"keys_dir: {cfg.curve_key_name}.key is not the key the manifest lists for {cfg.site_id}")
    signing = load_signing_key(cfg.signing_key)
    if public_raw(signing) != public_raw(entry.ed25519_public):
        raise ConfigError(f"signing_key: not the Ed25519 key the manifest lists for {cfg.site_id}")
    if cfg.agreement_key_path.exists():
        try:
            agreement = public_hex(load_agreement_key(cfg.agreement_key_path))
        except ConfigError as exc:
            raise ConfigError(f"agreement_key: {exc}") from None
        if agreement != entry.x25519_public:
            raise ConfigError(f"agreement_key: not the x25519 key the manifest lists for {cfg.site_id}")
    elif cfg.agreement_key is not None:
        raise ConfigError(f"agreement_key: {cfg.agreement_key_path} does not exist")
    return manifest
