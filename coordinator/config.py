"""The coordinator's configuration: ``coordinator.toml`` (:class:`CoordinatorConfig`, loaded and
checked against the signed manifest at the CLI edge) and what the process runs from once the keys
are read (:class:`ServiceConfig`: those settings plus the keys and the verified roster, nothing
copied), with the run config its generator is built and checkpointed with.

:func:`verify_coordinator_federation` is what the coordinator calls at start, before opening a
socket: it verifies the manifest with its own signing key and checks that it lists this
coordinator's CURVE key, that the quorum is reachable and that run ids agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from secgan.core.config import choices, rng
from secgan.core.errors import ConfigError
from secgan.core.ids import RUN_ID_RE, SITE_ID_RE
from secgan.core.spec import ImageSpec
from secgan.gan.config import CONDITION_SOURCES, ModelConfig, TrainConfig
from secgan.net.limits import WireLimits
from secgan.net.schema import AGGREGATIONS
from secgan.net.transport import SocketTuning
from secgan.run.config import DataConfig, RunConfig
from secgan.settings import HOST_RE, LOOPBACK_HOSTS, POSITIVE, endpoint_host, load_config_file

from coordinator.scheduler import QuorumPolicy

if TYPE_CHECKING:
    from secgan.keys.manifest import Manifest


@dataclass(frozen=True)
class CoordinatorConfig:
    """The coordinator service. ``train.steps`` and ``train.checkpoint_every`` drive the run;
    ``train.lr_d`` is not used here (each site trains its own D)."""

    # ROUTER bind address; anything but loopback needs allow_remote = true
    host: str = "127.0.0.1"
    # ROUTER port; the only port of a federation, open it to the sites' addresses only
    port: int = field(default=5555, metadata=rng(min=1, max=65535))
    # must be true to bind or advertise anything but loopback (a deliberate step)
    allow_remote: bool = False
    # the endpoint sites connect to (written into the manifest); default tcp://host:port
    advertise: str | None = None
    keys_dir: str = "keys"  # holds <key_name>.key and <key_name>.key_secret (CURVE)
    # file stem of the CURVE key pair in keys_dir
    key_name: str = "coordinator"
    signing_key: str = "signing.pem"  # Ed25519, signs the manifest
    # the signed federation manifest (site ids and public keys)
    manifest: str = "manifest.json"
    state_dir: str = "state"  # checkpoints, run.json
    # names the run; messages of another run are dropped as wrong_run
    run_id: str = "run"
    # quorum: a round completes with answers from at least this many sites
    min_sites: int = field(default=1, metadata=rng(min=1, max=1024))
    # a site that has not answered a round by then is left out of that step
    round_deadline_s: float = field(default=120.0, metadata=POSITIVE)
    # a step retried this often without a quorum stops the run (quorum_lost)
    max_round_attempts: int = field(default=3, metadata=rng(min=1, max=100))
    # kept for symmetry with sites; the coordinator sends no heartbeats of its own, it answers each site's
    heartbeat_interval_s: float = field(default=1.0, metadata=POSITIVE)
    # an idle site silent this long is marked dead (readmitted when it says Hello again)
    heartbeat_timeout_s: float = field(default=10.0, metadata=POSITIVE)
    # after the run ends, answer sites with the final Stop until each that joined acknowledged it, at most this long (0: close at once)
    stop_linger_s: float = field(default=30.0, metadata=rng(min=0.0, max=86400.0))
    # before the first round, wait this long for every manifest site to say Hello; default heartbeat_timeout_s
    startup_grace_s: float | None = field(default=None, metadata=rng(min=0.0))
    # how often state_dir/run.json is rewritten during the run
    run_json_every_s: float = field(default=5.0, metadata=POSITIVE)
    # "waiting_for_sites" names the manifest's sites without a Hello, first after the start-up grace
    # (heartbeat_timeout_s), then every this many seconds while any is missing
    waiting_warn_every_s: float = field(default=60.0, metadata=POSITIVE)
    # at start, prove that the authenticator refuses an unknown key before serving (off only in tests and benches)
    self_check: bool = True
    # where label maps come from: procedural (no patient data), bank (bank_dir), site (refused with DP)
    condition_source: str = field(default="procedural", metadata=choices(*CONDITION_SOURCES))
    # folder of label maps the coordinator may legitimately hold, for condition_source = bank
    bank_dir: str | None = None
    # routed: each site its own batch; secure-sum: one batch, the coordinator learns only the sum
    aggregation: str = field(default="routed", metadata=choices(*AGGREGATIONS))
    # where G runs: cpu or cuda
    device: str = field(default="cpu", metadata=choices("cpu", "cuda"))
    image: ImageSpec = field(default_factory=ImageSpec)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    wire: WireLimits = field(default_factory=WireLimits)
    tuning: SocketTuning = field(default_factory=SocketTuning)

    def __post_init__(self) -> None:
        if HOST_RE.fullmatch(self.host) is None:
            raise ValueError(f"host: not a host name or address: {self.host!r}")
        if self.host not in LOOPBACK_HOSTS and not self.allow_remote:
            raise ValueError(f"host = {self.host!r} is not loopback; set allow_remote = true to listen on a network")
        if self.advertise is not None:
            adv = endpoint_host(self.advertise)
            if adv is None:
                raise ValueError("advertise: must look like tcp://HOST:PORT")
            if adv not in LOOPBACK_HOSTS and not self.allow_remote:
                raise ValueError("advertise is not loopback; set allow_remote = true")
        elif self.host in ("0.0.0.0", "::"):
            raise ValueError(f"host = {self.host!r} binds every interface; set advertise = \"tcp://NAME:PORT\"")
        if RUN_ID_RE.fullmatch(self.run_id) is None:
            raise ValueError("run_id: must be 1-64 characters of letters, digits, '-', '_' or '.'")
        if not SITE_ID_RE.fullmatch(self.key_name):
            raise ValueError("key_name: must be 1-64 of [a-z0-9_-]")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError("heartbeat_timeout_s must be greater than heartbeat_interval_s")
        if self.condition_source == "bank" and not self.bank_dir:
            raise ValueError("condition_source = 'bank' needs bank_dir")
        if self.aggregation == "secure-sum" and self.min_sites < 3:
            raise ValueError("aggregation = 'secure-sum' needs min_sites >= 3 (with two sites each learns the other's gradient)")
        if self.aggregation == "secure-sum" and self.condition_source == "site":
            raise ValueError("aggregation = 'secure-sum' shares one batch drawn at the coordinator: "
                             "condition_source must be 'procedural' or 'bank'")
        if self.train.l1_weight > 0 and self.condition_source != "site":
            raise ValueError("train.l1_weight > 0 needs condition_source = 'site'")
        try:
            self.model.check_fits(self.image)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        from secgan.net.limits import batch_wire_problem

        problem = batch_wire_problem(image=self.image, batch_size=self.train.batch_size, limits=self.wire,
                                     aggregation=self.aggregation)
        if problem is not None:
            raise ValueError(problem)

    @property
    def quorum(self) -> QuorumPolicy:
        """The round rules these settings give (the one place they are derived): a site that misses
        rounds is waited for max(3 heartbeat timeouts, one round deadline) before the run stops, and
        before the first round every able site is waited for ``startup_grace_s`` (default one heartbeat
        timeout)."""
        return QuorumPolicy(min_sites=self.min_sites, round_deadline_s=self.round_deadline_s,
                            max_attempts=self.max_round_attempts,
                            readmission_wait_s=max(self.heartbeat_timeout_s * 3, self.round_deadline_s),
                            startup_grace_s=self.heartbeat_timeout_s if self.startup_grace_s is None
                            else self.startup_grace_s)

    @property
    def bind(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """What sites connect to."""
        if self.advertise is not None:
            return self.advertise
        return self.bind.replace("tcp://localhost:", "tcp://127.0.0.1:")




COORDINATOR_PATH_KEYS = ("keys_dir", "signing_key", "manifest", "state_dir", "bank_dir")


def load_coordinator_config(path: str | Path) -> CoordinatorConfig:
    return load_config_file(CoordinatorConfig, path, COORDINATOR_PATH_KEYS)


def verify_coordinator_federation(cfg: CoordinatorConfig) -> "Manifest":
    """Verify the manifest with the coordinator's own signing key and check that it lists this
    coordinator's CURVE key, that the quorum is reachable and that run ids agree."""
    from secgan.keys.curve import load_curve_keypair
    from secgan.keys.manifest import load_manifest
    from secgan.keys.signing import load_signing_key

    signing = load_signing_key(cfg.signing_key)
    manifest = load_manifest(cfg.manifest, coordinator_verify_key=signing.public_key())
    public, _ = load_curve_keypair(cfg.keys_dir, cfg.key_name)
    if public != manifest.coordinator.curve_public:
        raise ConfigError(f"keys_dir: {cfg.key_name}.key is not the coordinator key listed in {cfg.manifest}")
    if cfg.min_sites > len(manifest.sites):
        raise ConfigError(f"min_sites = {cfg.min_sites} but the manifest lists {len(manifest.sites)} site(s)")
    if manifest.run_id is not None and manifest.run_id != cfg.run_id:
        raise ConfigError(f"run_id = {cfg.run_id!r} differs from the manifest's run_id {manifest.run_id!r}")
    if cfg.aggregation == "secure-sum":
        from secgan.secagg import resolve_threshold

        manifest.agreement_roster()  # every site needs an x25519_public
        try:
            threshold = resolve_threshold(0, len(manifest.sites))
        except ConfigError as exc:
            raise ConfigError(f"aggregation = 'secure-sum': {exc}") from None
        if cfg.min_sites < threshold:
            raise ConfigError(
                f"aggregation = 'secure-sum': min_sites = {cfg.min_sites} is below the default site threshold "
                f"{threshold} (strict majority of {len(manifest.sites)} sites, at least 3); sites would refuse such rounds"
            )
    return manifest


@dataclass(frozen=True)
class ServiceConfig:
    """What the coordinator process runs from: its settings (``coordinator.toml``, unchanged) and what
    the CLI edge read from files for them: the CURVE key pair and, from the VERIFIED manifest, the
    sites' keys and (secure-sum) their agreement keys. No file reading below it, and no setting copied."""

    settings: CoordinatorConfig
    server_public: bytes
    server_secret: bytes
    site_keys: dict[str, bytes]  # site id -> z85 CURVE public key, from the VERIFIED manifest
    # site id -> x25519_public from the VERIFIED manifest (secure-sum only)
    agreement_roster: dict[str, str] | None = None
    progress: bool | None = None  # None: a bar when stderr is a TTY


def generator_run_config(settings: CoordinatorConfig) -> RunConfig:
    """The run config G is built from and checkpointed with (the sites' side is theirs)."""
    return RunConfig(image=settings.image, model=settings.model, train=settings.train, run_id=settings.run_id,
                     device=settings.device,
                     data=DataConfig(condition_source=settings.condition_source, bank_dir=settings.bank_dir))
