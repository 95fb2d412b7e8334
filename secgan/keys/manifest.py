"""The signed federation manifest: who belongs to a federation, signed by the coordinator.

The manifest is a signed JSON document (``secgan.keys.signing``) listing the coordinator's CURVE
and Ed25519 public keys and endpoint, and per site its id, CURVE and Ed25519 public keys and,
for secure-sum, its X25519 agreement key (``secgan.keys.agreement``). Loading verifies the
signature first, then the schema; a schema error is a ConfigError naming the field.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secgan.core.errors import ConfigError, CryptoError
from secgan.core.ids import RUN_ID_RE, SITE_ID_RE
from secgan.keys.agreement import is_public_hex, parse_public_hex
from secgan.keys.curve import is_z85_key
from secgan.keys.signing import public_b64, public_raw, read_signed_json, verify_key_from_b64, write_signed_json

_ENDPOINT_RE = re.compile(r"tcp://([A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})")



@dataclass(frozen=True)
class CoordinatorEntry:
    curve_public: bytes  # z85
    ed25519_public: Ed25519PublicKey
    endpoint: str


@dataclass(frozen=True)
class SiteEntry:
    site_id: str
    curve_public: bytes  # z85
    ed25519_public: Ed25519PublicKey
    # secure-sum key agreement (64 lowercase hex); None in kits made before secure-sum existed
    x25519_public: str | None = None


@dataclass(frozen=True)
class Manifest:
    """Who belongs to a federation, signed by the coordinator's Ed25519 key."""

    federation: str
    run_id: str | None
    coordinator: CoordinatorEntry
    sites: tuple[SiteEntry, ...]
    created: str

    def site(self, site_id: str) -> SiteEntry | None:
        return next((s for s in self.sites if s.site_id == site_id), None)

    def site_by_curve_key(self, public: bytes | str) -> SiteEntry | None:
        """The site a ZAP User-Id (its CURVE public key, z85) belongs to."""
        if isinstance(public, str):
            public = public.encode("ascii", "replace")
        return next((s for s in self.sites if s.curve_public == public), None)

    def site_curve_keys(self) -> tuple[bytes, ...]:
        return tuple(s.curve_public for s in self.sites)

    def site_keys(self) -> dict[str, bytes]:
        """site id -> z85 CURVE public key: the ZAP allow-list."""
        return {s.site_id: s.curve_public for s in self.sites}

    def agreement_roster(self) -> dict[str, str]:
        """site id -> x25519_public for secure-sum; ConfigError naming a site that has none."""
        missing = [s.site_id for s in self.sites if s.x25519_public is None]
        if missing:
            raise ConfigError(
                f"manifest: site(s) {', '.join(missing[:5])} have no x25519_public; secure-sum needs a kit "
                "provisioned with agreement keys (re-run `secgan provision`)"
            )
        return {s.site_id: s.x25519_public for s in self.sites}  # type: ignore[misc]


def manifest_dict(
    *,
    federation: str,
    coordinator_curve_public: bytes,
    coordinator_verify_key: Ed25519PublicKey | Ed25519PrivateKey,
    endpoint: str,
    sites: Iterable[tuple[Any, ...]],
    created: str,
    run_id: str | None = None,
) -> dict[str, Any]:
    """The unsigned manifest as JSON data; ``sites`` are (site_id, curve_public, ed25519 key) or
    (site_id, curve_public, ed25519 key, x25519_public hex) for secure-sum."""
    out: dict[str, Any] = {
        "federation": federation,
        "coordinator": {
            "curve_public": coordinator_curve_public.decode("ascii"),
            "ed25519_public": public_b64(coordinator_verify_key),
            "endpoint": endpoint,
        },
        "sites": [_site_dict(*entry) for entry in sites],
        "created": created,
    }
    if run_id is not None:
        out["run_id"] = run_id
    parse_manifest(out)  # never write what could not be loaded
    return out


def _site_dict(sid: str, cpub: bytes, vk: Any, x25519_public: str | None = None) -> dict[str, Any]:
    out = {"site_id": sid, "curve_public": cpub.decode("ascii"), "ed25519_public": public_b64(vk)}
    if x25519_public is not None:
        out["x25519_public"] = x25519_public
    return out


def write_manifest(path: str | os.PathLike[str], manifest: Mapping[str, Any], key: Ed25519PrivateKey) -> None:
    write_signed_json(path, manifest, key)


def is_endpoint(value: Any) -> bool:
    """``tcp://HOST:PORT`` with a DNS name, IPv4 address or bracketed IPv6 address."""
    m = _ENDPOINT_RE.fullmatch(value) if isinstance(value, str) else None
    return m is not None and 0 < int(m.group(2)) < 65536


def _want(cond: bool, what: str) -> None:
    if not cond:
        raise ConfigError(f"manifest: {what}")


def _exact_keys(obj: Any, required: set[str], optional: set[str], where: str) -> None:
    _want(isinstance(obj, dict), f"{where} must be an object")
    missing, extra = required - set(obj), set(obj) - required - optional
    _want(not missing, f"{where}: missing {', '.join(sorted(missing))}")
    _want(not extra, f"{where}: unknown key(s) {', '.join(sorted(extra))}")


def _ed_key(value: Any, where: str) -> Ed25519PublicKey:
    try:
        _want(isinstance(value, str), f"{where} must be a string")
        return verify_key_from_b64(value)
    except ValueError:
        raise ConfigError(f"manifest: {where} is not a base64 Ed25519 public key") from None


def _x25519_hex(value: Any, where: str) -> str:
    """A valid X25519 public key as 64 lowercase hex characters (the field is optional, never null)."""
    _want(is_public_hex(value), f"{where} must be 64 lowercase hex characters")
    try:
        parse_public_hex(value)
    except CryptoError:
        raise ConfigError(f"manifest: {where} is not an X25519 public key") from None
    _want(value != "00" * 32, f"{where} is the all-zero key")
    return value


def parse_manifest(obj: Any) -> Manifest:
    """Schema check of an (already verified) manifest object; ConfigError naming the field."""
    _exact_keys(obj, {"federation", "coordinator", "sites", "created"}, {"run_id"}, "manifest")
    fed = obj["federation"]
    _want(isinstance(fed, str) and RUN_ID_RE.fullmatch(fed) is not None, "federation must be 1-64 of [A-Za-z0-9._-]")
    run_id = obj.get("run_id")
    _want(run_id is None or (isinstance(run_id, str) and RUN_ID_RE.fullmatch(run_id) is not None),
          "run_id must be 1-64 of [A-Za-z0-9._-]")
    _want(isinstance(obj["created"], str) and len(obj["created"]) <= 64, "created must be a short string")
    c = obj["coordinator"]
    _exact_keys(c, {"curve_public", "ed25519_public", "endpoint"}, set(), "coordinator")
    _want(is_z85_key(c["curve_public"]), "coordinator.curve_public is not a z85 CURVE key")
    _want(is_endpoint(c["endpoint"]), "coordinator.endpoint must look like tcp://HOST:PORT")
    coordinator = CoordinatorEntry(
        curve_public=c["curve_public"].encode("ascii"),
        ed25519_public=_ed_key(c["ed25519_public"], "coordinator.ed25519_public"),
        endpoint=c["endpoint"],
    )
    _want(isinstance(obj["sites"], list) and 1 <= len(obj["sites"]) <= 1024, "sites must be a list of 1-1024 sites")
    sites = []
    for i, s in enumerate(obj["sites"]):
        where = f"sites[{i}]"
        _exact_keys(s, {"site_id", "curve_public", "ed25519_public"}, {"x25519_public"}, where)
        _want(isinstance(s["site_id"], str) and SITE_ID_RE.fullmatch(s["site_id"]) is not None,
              f"{where}.site_id must be 1-64 of [a-z0-9_-], starting with a letter or digit")
        _want(is_z85_key(s["curve_public"]), f"{where}.curve_public is not a z85 CURVE key")
        sites.append(
            SiteEntry(
                site_id=s["site_id"],
                curve_public=s["curve_public"].encode("ascii"),
                ed25519_public=_ed_key(s["ed25519_public"], f"{where}.ed25519_public"),
                x25519_public=_x25519_hex(s["x25519_public"], f"{where}.x25519_public") if "x25519_public" in s else None,
            )
        )
    ids = [s.site_id for s in sites]
    _want(len(set(ids)) == len(ids), "site ids must be unique")
    curve = [coordinator.curve_public] + [s.curve_public for s in sites]
    _want(len(set(curve)) == len(curve), "CURVE public keys must be unique (coordinator included)")
    ed = [public_raw(coordinator.ed25519_public)] + [public_raw(s.ed25519_public) for s in sites]
    _want(len(set(ed)) == len(ed), "Ed25519 public keys must be unique (coordinator included)")
    xs = [s.x25519_public for s in sites if s.x25519_public is not None]
    _want(len(set(xs)) == len(xs), "x25519_public keys must be unique")
    return Manifest(
        federation=fed, run_id=run_id, coordinator=coordinator, sites=tuple(sites), created=obj["created"]
    )


def load_manifest(path: str | os.PathLike[str], *, coordinator_verify_key: Ed25519PublicKey) -> Manifest:
    """Verify the coordinator's signature first, then the schema. CryptoError if the signature
    fails (opaque), ConfigError naming the field if the signed content is malformed; the key the
    manifest lists for the coordinator must be the key that signed it."""
    body = read_signed_json(path, coordinator_verify_key)
    try:
        manifest = parse_manifest(body)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if public_raw(manifest.coordinator.ed25519_public) != public_raw(coordinator_verify_key):
        raise ConfigError(f"{path}: coordinator.ed25519_public is not the key that signed the manifest")
    return manifest
