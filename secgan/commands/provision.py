"""``secgan provision``: generate a federation kit (keys, configs, signed manifest).

Layout written under ``--out DIR`` (directories 0700, secret files 0600 from creation)::

    coordinator/coordinator.toml  keys/coordinator.key(+_secret)  signing.pem  signing.pub  manifest.json
    site-K/site.toml  keys/site-K.key(+_secret)  keys/site-K.x25519  signing.pem  signing.pub
           coordinator.key (CURVE public only)  coordinator-signing.pub  manifest.json

``site-K.x25519`` is the site's X25519 secure-sum agreement key (0600); its public half is in the
signed manifest as ``x25519_public``, so sites take each other's keys from the manifest and the
coordinator only relays them. Each folder is what one party keeps; only public files are copied between them.

In a real deployment each site generates its own keys (``secgan keys generate``) and sends only its
public-keys file; ``--site-keys FILE`` (once per site) lists those keys in the manifest, and that
site's folder then holds no secret at all (site.toml, manifest.json, coordinator.key,
coordinator-signing.pub: the site copies them next to its own keys). Without ``--site-keys`` this
command generates every party's keys in one place, for demos and tests.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from pathlib import Path
from typing import Any

HELP = "generate a federation kit: CURVE and Ed25519 keys, configs and a signed manifest"
DEFAULT_STEPS = 200  # one number for the coordinator's train.steps and the sites' planned_steps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sites", type=int, default=None,
                        help="number of sites (1-1024); with --site-keys, the number of files (may be omitted)")
    parser.add_argument("--site-keys", type=Path, action="append", default=None, metavar="FILE",
                        help="a site's public-keys file from `secgan keys generate` (once per site): its keys are "
                             "listed in the manifest and none of its secrets is generated here")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the kit into")
    parser.add_argument("--host", default="127.0.0.1", help="coordinator bind host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5555, help="coordinator port (default 5555)")
    parser.add_argument("--advertise", default=None, help="host sites connect to, when --host binds all interfaces")
    parser.add_argument("--run-id", default=None, help="bind the manifest to this run id (default: a fresh id, not bound)")
    parser.add_argument("--federation", default="secgan", help="federation name (default secgan)")
    parser.add_argument("--data-root", type=Path, default=None, help="point site-K's data_dir at DATA_ROOT/site-K")
    parser.add_argument("--image-size", type=int, default=64, help="image size written into every config (default 64)")
    parser.add_argument("--aggregation", choices=("routed", "secure-sum"), default="routed",
                        help="aggregation written into coordinator.toml (default routed)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="generator steps of the run: coordinator train.steps and every site's "
                             f"policy.planned_steps, which its noise is calibrated for (default {DEFAULT_STEPS})")
    parser.add_argument("--force", action="store_true", help="overwrite keys, configs and manifest of an existing kit")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(data: dict[str, Any], *, header: str = "") -> str:
    """A flat table plus one level of sub-tables, enough for the generated configs."""
    lines = [f"# {ln}" if ln else "#" for ln in header.splitlines()]
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and v is not None}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines += [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    from secgan.core.fsio import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"), mode=0o644)


def provision(
    out: Path,
    *,
    sites: int,
    host: str = "127.0.0.1",
    port: int = 5555,
    advertise: str | None = None,
    run_id: str | None = None,
    federation: str = "secgan",
    data_root: Path | None = None,
    image_size: int = 64,
    aggregation: str = "routed",
    steps: int = DEFAULT_STEPS,
    force: bool = False,
    site_keys: list[Path] | None = None,
) -> dict[str, Path]:
    """Write the kit; returns {"coordinator": config path, "site-K": config path, ...}.

    ``site_keys``: public-keys files (``secgan keys generate``); the sites are then exactly those,
    with their own keys, and ``sites`` is their number (or None)."""
    from secgan.core.errors import ConfigError
    from secgan.keys.agreement import generate_agreement_key, write_agreement_key
    from secgan.keys.curve import load_curve_public, write_curve_keypair, write_curve_public
    from secgan.keys.files import make_private_dir
    from secgan.keys.manifest import manifest_dict, write_manifest
    from secgan.keys.signing import generate_signing_key, write_signing_key, write_verify_key
    from secgan.core.spec import ImageSpec
    from secgan.settings import LOOPBACK_HOSTS, load_site_config, verify_site_federation

    from coordinator.config import CoordinatorConfig, load_coordinator_config, verify_coordinator_federation

    supplied = _read_site_keys(site_keys or [])
    if supplied:
        if sites is not None and sites != len(supplied):
            raise ConfigError(f"--sites {sites} but {len(supplied)} --site-keys file(s) were given")
        sites = len(supplied)
    if sites is None:
        raise ConfigError("give --sites N, or one --site-keys FILE per site")
    if not 1 <= sites <= 1024:
        raise ConfigError(f"--sites must be between 1 and 1024, got {sites}")
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"--steps must be a positive integer, got {steps!r}")
    out = Path(out)
    site_ids = list(supplied) if supplied else [f"site-{k}" for k in range(1, sites + 1)]
    existing = [p for p in [out / "coordinator", *(out / s for s in site_ids)] if p.exists()]
    existing += [p for p in out.glob("site-*") if p.is_dir() and p not in existing]
    if existing and not force:
        raise ConfigError(f"{out}: a kit already exists ({existing[0].name}); use --force to overwrite its keys")
    remote = host not in LOOPBACK_HOSTS or (advertise is not None and advertise not in LOOPBACK_HOSTS)
    connect_host = advertise or ("127.0.0.1" if host == "localhost" else host)
    bracket = f"[{connect_host}]" if ":" in connect_host else connect_host
    endpoint = f"tcp://{bracket}:{port}"
    try:  # refuse bad host/port/run id before writing anything
        CoordinatorConfig(
            host=host, port=port, allow_remote=remote, advertise=endpoint if advertise else None,
            run_id=run_id or "run", image=ImageSpec(size=image_size), aggregation=aggregation, min_sites=sites,
        )
    except ValueError as exc:
        raise ConfigError(f"provision: {exc}") from None
    from secgan.gan.config import recommended_settings

    recommended = recommended_settings(image_size)  # the same model and optimiser on every party
    fresh_run = run_id or f"run-{time.strftime('%Y%m%d')}-{secrets.token_hex(3)}"

    if not out.exists():
        make_private_dir(out)
    cdir = out / "coordinator"
    make_private_dir(cdir)
    make_private_dir(cdir / "keys")
    cpub_path, _ = write_curve_keypair(cdir / "keys", "coordinator")
    coordinator_curve = load_curve_public(cpub_path)
    csign = generate_signing_key()
    write_signing_key(cdir / "signing.pem", csign)
    write_verify_key(cdir / "signing.pub", csign)

    members = []
    for sid in site_ids:
        sdir = out / sid
        make_private_dir(sdir)
        if sid in supplied:  # the site made its keys itself: only its public keys come in
            pk = supplied[sid]
            members.append((sid, pk.curve_public, pk.ed25519_public, pk.x25519_public))
            continue
        make_private_dir(sdir / "keys")
        spub_path, _ = write_curve_keypair(sdir / "keys", sid)
        ssign = generate_signing_key()
        write_signing_key(sdir / "signing.pem", ssign)
        write_verify_key(sdir / "signing.pub", ssign)
        x25519_public = write_agreement_key(sdir / "keys" / f"{sid}.x25519", generate_agreement_key())
        members.append((sid, load_curve_public(spub_path), ssign, x25519_public))

    manifest = manifest_dict(
        federation=federation,
        coordinator_curve_public=coordinator_curve,
        coordinator_verify_key=csign,
        endpoint=endpoint,
        sites=members,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        run_id=run_id,
    )
    write_manifest(cdir / "manifest.json", manifest, csign)
    signed_manifest = (cdir / "manifest.json").read_bytes()

    written: dict[str, Path] = {}
    ctoml = cdir / "coordinator.toml"
    _write_text(
        ctoml,
        to_toml(
            {
                "host": host,
                "port": port,
                "allow_remote": remote,
                "advertise": endpoint if advertise else None,
                "keys_dir": "keys",
                "key_name": "coordinator",
                "signing_key": "signing.pem",
                "manifest": "manifest.json",
                "state_dir": "state",
                "run_id": fresh_run,
                "min_sites": sites,
                "condition_source": "procedural",
                "aggregation": aggregation,
                "image": {"size": image_size},
                "model": recommended["model"],
                "train": {**recommended["train"], "steps": steps},
            },
            header=f"secgan coordinator of federation {federation!r} (generated by `secgan provision`).\n"
            "Relative paths are relative to this file. Keep keys/ and signing.pem private.",
        ),
    )
    written["coordinator"] = ctoml

    for sid, *_ in members:
        sdir = out / sid
        write_curve_public(sdir / "coordinator.key", coordinator_curve)
        write_verify_key(sdir / "coordinator-signing.pub", csign)
        _write_text(sdir / "manifest.json", signed_manifest.decode("utf-8"))
        data_dir = str((data_root / sid).resolve()) if data_root is not None else "data"
        stoml = sdir / "site.toml"
        _write_text(
            stoml,
            to_toml(
                {
                    "site_id": sid,
                    "data_dir": data_dir,
                    "split": "train",
                    "state_dir": "state",
                    "keys_dir": "keys",
                    "signing_key": "signing.pem",
                    "coordinator_endpoint": endpoint,
                    "coordinator_public_key": "coordinator.key",
                    "coordinator_signing_key": "coordinator-signing.pub",
                    "manifest": "manifest.json",
                    "allow_remote": remote,
                    # private to the site: never derive DP noise from a value others may know
                    "seed": secrets.randbits(62),
                    "image": {"size": image_size},
                    "model": recommended["model"],
                    "train": {**recommended["train"], "steps": steps},
                    # planned_steps = the coordinator's train.steps: the noise is calibrated for this run
                    "policy": {"mode": "dpsgd", "target_epsilon": 10.0, "delta": 1e-5, "planned_steps": steps},
                },
                header=f"secgan site {sid} of federation {federation!r} (generated by `secgan provision`).\n"
                "Relative paths are relative to this file. Keep keys/*.key_secret and signing.pem private."
                + ("" if data_root is not None else "\nSet data_dir to this site's BraTS-layout folder."),
            ),
        )
        written[sid] = stoml

    # never hand out a kit that does not load and verify
    verify_coordinator_federation(load_coordinator_config(ctoml))
    for sid in site_ids:
        if sid not in supplied:  # a site with its own keys runs this check itself at start
            verify_site_federation(load_site_config(written[sid]))
    return written


def _read_site_keys(paths: list[Path]) -> dict:
    """site id -> SitePublicKeys, in the order given; refuses two files for one site or one key twice."""
    from secgan.commands.keys import read_site_public_keys
    from secgan.core.errors import ConfigError

    out: dict = {}
    seen: dict[bytes, str] = {}
    for path in paths:
        pk = read_site_public_keys(path)
        if pk.site_id in out:
            raise ConfigError(f"{path}: a second public-keys file for {pk.site_id}")
        if pk.curve_public in seen:
            raise ConfigError(f"{path}: {pk.site_id} has the same CURVE key as {seen[pk.curve_public]}")
        seen[pk.curve_public] = pk.site_id
        out[pk.site_id] = pk
    return out


def run(args: argparse.Namespace) -> int:
    from secgan.core.logs import get_logger

    written = provision(
        args.out,
        sites=args.sites,
        host=args.host,
        port=args.port,
        advertise=args.advertise,
        run_id=args.run_id,
        federation=args.federation,
        data_root=args.data_root,
        image_size=args.image_size,
        aggregation=args.aggregation,
        steps=args.steps,
        force=args.force,
        site_keys=args.site_keys,
    )
    get_logger(__name__).info("provisioned", sites=len(written) - 1, out=str(args.out))
    print(f"federation kit written to {args.out}:")
    for name, path in written.items():
        print(f"  {name:12s} {path}")
    print("each folder belongs to one party; copy it to that party over a trusted channel.")
    return 0
