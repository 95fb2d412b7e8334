"""Signing and verifying audit reports: a thin layer over ``secgan.keys.signing``.

A report is a JSON object signed with the site's Ed25519 key over its canonical JSON; the object
carries the SHA-256 of its HTML page (``artifacts["report.html"]``), so verifying the JSON and
then re-hashing the page proves the pair untouched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from secgan.core.errors import ConfigError, CryptoError, DataError
from secgan.core.fsio import atomic_write_bytes

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
ANNEX_HTML = "annex.html"
MAX_REPORT_BYTES = 64 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sign_report(report: dict[str, Any], signing_key_path: Path) -> dict[str, Any]:
    from secgan.keys.signing import load_signing_key, sign_json

    return sign_json(report, load_signing_key(signing_key_path))


def write_report_json(path: Path, signed: dict[str, Any]) -> None:
    data = json.dumps(signed, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(path, data.encode("utf-8") + b"\n")


def read_report_json(path: Path) -> dict[str, Any]:
    """Parse a report file strictly (duplicate keys, NaN and oversize refused); DataError names it."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_JSON
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            raise DataError(f"{path}: report larger than {MAX_REPORT_BYTES} bytes")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: report file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read report ({exc.strerror})") from None

    def _no_dupes(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"duplicate key {k!r}")
            out[k] = v
        return out

    def _no_constants(name):
        raise ValueError(f"{name} is not JSON")

    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_dupes, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a valid JSON report ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: a report must be a JSON object")
    return obj


def load_public_keys(*, public_key: Path | None = None, manifest: Path | None = None,
                     coordinator_key: Path | None = None) -> tuple[dict[str, Any] | None, Any]:
    """(site_id -> key from the manifest, or None; a single key, or None). ConfigError when unusable."""
    from secgan.keys.manifest import load_manifest
    from secgan.keys.signing import load_verify_key

    if manifest is not None:
        if coordinator_key is None:
            raise ConfigError("--manifest needs --coordinator-key to verify the manifest's signature")
        m = load_manifest(manifest, coordinator_verify_key=load_verify_key(coordinator_key))
        return {s.site_id: s.ed25519_public for s in m.sites}, None
    if public_key is not None:
        return None, load_verify_key(public_key)
    return None, None


def verify_report(path: Path, *, site_keys: dict[str, Any] | None = None, key: Any = None) -> dict[str, Any]:
    """The verified report body (without its signature); raises CryptoError or DataError.

    The key is ``key`` or, with ``site_keys`` (from a verified manifest), the key listed for the
    site the report names. Every file the report lists (the HTML page, the annex) that is present next
    to it must match its signed SHA-256; a missing HTML page is reported by the caller, not an error here.
    """
    from secgan.keys.signing import verify_json

    path = Path(path)
    if path.is_dir():
        path = path / REPORT_JSON
    obj = read_report_json(path)
    if key is None:
        if site_keys is None:
            raise ConfigError("no key to verify with: give --public-key, or --manifest with --coordinator-key")
        sid = obj.get("site_id")
        if not isinstance(sid, str) or sid not in site_keys:
            raise CryptoError(f"{path}: the report's site is not in the federation manifest")
        key = site_keys[sid]
    try:
        body = verify_json(obj, key)
    except CryptoError:
        raise CryptoError(f"{path}: signature verification failed (edited, or signed by another key)") from None
    artifacts = body.get("artifacts")
    if not isinstance(artifacts, dict):
        raise DataError(f"{path}: signed report lists no artifacts")
    for name, meta in artifacts.items():
        if name not in (REPORT_HTML, ANNEX_HTML) or not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
            raise DataError(f"{path}: malformed artifact entry {name!r}")
        f = path.parent / name
        if f.is_file() and sha256_file(f) != meta["sha256"]:
            raise CryptoError(f"{f}: content does not match the SHA-256 signed in {path.name} (edited or replaced)")
    return body
