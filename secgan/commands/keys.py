"""``secgan keys generate``: a site makes its own keys and sends only the public ones.

    secgan keys generate --site-id site-1 --out site-1

writes, in the layout a site folder of ``secgan provision`` has (folders 0700, secrets 0600)::

    site-1/keys/site-1.key          CURVE public certificate
    site-1/keys/site-1.key_secret   CURVE secret certificate        (0600, stays here)
    site-1/keys/site-1.x25519       X25519 secure-sum agreement key (0600, stays here)
    site-1/signing.pem              Ed25519 signing key (reports)   (0600, stays here)
    site-1/signing.pub              Ed25519 public key
    site-1/site-1.public.json       the three public keys: the ONLY file to send to the coordinator

The coordinator's operator passes the public-keys files to ``secgan provision --site-keys FILE ...``,
which lists them in the signed manifest and writes that site's folder without any secret; the site
copies that folder's files (site.toml, manifest.json, coordinator.key, coordinator-signing.pub) next
to its keys.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secgan.core.ids import SITE_ID_RE

HELP = "a site generates its own CURVE, Ed25519 and X25519 keys and a public-keys file for the coordinator"

PUBLIC_FORMAT = "secgan-site-public-keys/1"
PUBLIC_FIELDS = ("format", "site_id", "curve_public", "ed25519_public", "x25519_public")


@dataclass(frozen=True)
class SitePublicKeys:
    """One site's public keys, as ``secgan provision --site-keys`` reads them."""

    site_id: str
    curve_public: bytes  # z85, 40 bytes
    ed25519_public: Any  # Ed25519PublicKey
    x25519_public: str  # 64 hex characters


def public_file_name(site_id: str) -> str:
    return f"{site_id}.public.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = sub.add_parser("generate", help="write this site's key pairs (secrets 0600) and SITE.public.json",
                         description=HELP)
    gen.add_argument("--site-id", required=True, help="the site's id in the federation, e.g. site-1")
    gen.add_argument("--out", required=True, type=Path, help="the site's folder (created 0700)")
    gen.add_argument("--force", action="store_true", help="replace keys already in --out (old keys stop working)")


def generate_site_keys(out: Path, *, site_id: str, force: bool = False) -> Path:
    """Write the key pairs and the public-keys file; returns the public-keys file's path."""
    from secgan.core.errors import ConfigError
    from secgan.keys.agreement import generate_agreement_key, write_agreement_key
    from secgan.keys.curve import curve_key_paths, load_curve_public, write_curve_keypair
    from secgan.keys.files import make_private_dir, write_public_file
    from secgan.keys.signing import generate_signing_key, public_b64, write_signing_key, write_verify_key

    if SITE_ID_RE.fullmatch(site_id) is None:
        raise ConfigError(f"--site-id {site_id!r}: must be 1-64 of [a-z0-9_-], starting with a letter or digit")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    pub_path, secret_path = curve_key_paths(out / "keys", site_id)
    existing = [p for p in (secret_path, out / "signing.pem", out / "keys" / f"{site_id}.x25519") if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists: these are {site_id}'s keys; pass --force to replace them")
    for folder in (out, out / "keys"):
        make_private_dir(folder)
    write_curve_keypair(out / "keys", site_id)
    signing = generate_signing_key()
    write_signing_key(out / "signing.pem", signing)
    write_verify_key(out / "signing.pub", signing)
    x25519_public = write_agreement_key(out / "keys" / f"{site_id}.x25519", generate_agreement_key())
    public = {
        "format": PUBLIC_FORMAT,
        "site_id": site_id,
        "curve_public": load_curve_public(pub_path).decode("ascii"),
        "ed25519_public": public_b64(signing),
        "x25519_public": x25519_public,
    }
    path = out / public_file_name(site_id)
    write_public_file(path, (json.dumps(public, indent=2) + "\n").encode("utf-8"))
    return path


def read_site_public_keys(path: Path) -> SitePublicKeys:
    """Parse and check one public-keys file; ConfigError naming the file and the field otherwise."""
    from secgan.core.errors import ConfigError, CryptoError
    from secgan.keys.agreement import parse_public_hex
    from secgan.keys.curve import is_z85_key
    from secgan.keys.signing import verify_key_from_b64

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable public-keys JSON file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or set(data) != set(PUBLIC_FIELDS):
        raise ConfigError(f"{path}: a public-keys file has exactly the fields {', '.join(PUBLIC_FIELDS)}"
                          " (a secret key never belongs in it)")
    if data["format"] != PUBLIC_FORMAT:
        raise ConfigError(f"{path}: format must be {PUBLIC_FORMAT!r}")
    sid = data["site_id"]
    if not isinstance(sid, str) or SITE_ID_RE.fullmatch(sid) is None:
        raise ConfigError(f"{path}: site_id must be 1-64 of [a-z0-9_-]")
    if not is_z85_key(data["curve_public"]):
        raise ConfigError(f"{path}: curve_public is not a z85 CURVE public key")
    try:
        ed = verify_key_from_b64(data["ed25519_public"]) if isinstance(data["ed25519_public"], str) else None
    except (CryptoError, ValueError):
        ed = None
    if ed is None:
        raise ConfigError(f"{path}: ed25519_public is not a base64 Ed25519 public key")
    try:
        if not isinstance(data["x25519_public"], str):
            raise CryptoError("not a string")
        parse_public_hex(data["x25519_public"])
    except CryptoError:
        raise ConfigError(f"{path}: x25519_public is not 64 hex characters of an X25519 public key") from None
    return SitePublicKeys(site_id=sid, curve_public=data["curve_public"].encode("ascii"), ed25519_public=ed,
                          x25519_public=data["x25519_public"])


def run(args: argparse.Namespace) -> int:
    path = generate_site_keys(args.out, site_id=args.site_id, force=args.force)
    print(f"keys of {args.site_id} written to {args.out} (secrets mode 0600; keep them there)")
    print(f"send ONLY {path} to the coordinator's operator (secgan provision --site-keys {path.name} ...)")
    return 0
