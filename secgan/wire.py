"""Wire format: typed messages <-> ZeroMQ multipart frames, without pickle.

Layout (in the style of "small header frame + raw buffers"):

- frame 0: a UTF-8 JSON object, the header::

      {"v": 1, "type": "fake_batch", "run": "run-1", "round": 3, "step": 7,
       "site": "site-2", "seq": 41,
       "body": {<the message's non-tensor fields>},
       "tensors": [{"name": "cond", "dtype": "float32", "shape": [8, 4, 64, 64], "nbytes": 524288},
                   {"name": "fake", ...}]}

- frames 1..n: one raw buffer per tensor, in the order of the tensor table: the tensor's bytes in
  C-contiguous order, little-endian. (Raw buffers, not safetensors: the header already carries
  dtype and shape, and a second self-describing container would be a second parser to harden.)

Message fields named ``run_id``, ``round`` and ``step`` are carried once, in the envelope (``run``,
``round``, ``step``), and left out of ``body``; :func:`encode` refuses a message whose fields
disagree with the envelope arguments (``envelope_mismatch``).

:func:`decode` validates in a fixed order and raises :class:`ProtocolError` with the code of the
FIRST failed check (codes and meanings in :data:`PROTOCOL_ERRORS`):

 1. frames are bytes-like buffers ............................... bad_frame
 2. 1 <= number of frames <= max_frames .......................... frame_count
 3. frame sizes: header, each tensor, total ..... header_too_large, tensor_too_large, message_too_large
 4. header is strict JSON (UTF-8, no NaN/Infinity, no duplicate keys, an object) ... bad_json
 5. protocol version supported ................................... unsupported_version
 6. message type known ........................................... unknown_type
 7. number of frames == 1 + tensors declared by the type ......... frame_count
 8. exact envelope key set ........................................ bad_header
 9. exact JSON types of envelope fields (bool is not int) ......... bad_type
10. exact body field set for the type ............................. bad_fields
11. exact JSON types of body fields ............................... bad_type
12. ranges: envelope then body (ints in [0, 2^53), finite floats, lengths, charsets) ... out_of_range
13. tensor table: a list of {name, dtype, shape, nbytes}, names as the type declares ... bad_tensor_table
14. dtype in the codec allow-list and in the field's own allow-list ... bad_dtype
15. rank <= max_dims, 1 <= every dim <= max_dim ................... bad_shape
16. prod(shape) * itemsize == nbytes == len(frame) ............... size_mismatch
17. tensor semantics (shapes that must agree, e.g. FakeBatch [B,4,H,W]) ... bad_shape
18. tensor values: floating tensors finite ........................ non_finite

Protocol state (run id, round, step, sequence number) is checked afterwards by :class:`ReplayGuard`
(wrong_run, future_round, stale, replay, seq_ahead), by the caller, per authenticated peer; the
guard remembers a message only when the caller commits it after all of its own checks.

Decoded tensors are fresh copies owned by torch (writable; they never alias ZeroMQ buffers).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

import torch

from secgan.config import rng
from secgan.errors import ProtocolError
from secgan.strictjson import parse_strict_json  # noqa: F401 - part of this module's API
from secgan.messages import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    FakeBatch,
    GradientReply,
    Message,
)

SUPPORTED_VERSIONS: tuple[int, ...] = (PROTOCOL_VERSION,)
MAX_INT = 2**53 - 1  # largest integer every JSON implementation represents exactly

PROTOCOL_ERRORS: dict[str, str] = {
    "bad_frame": "a frame is not a bytes-like buffer",
    "frame_count": "wrong number of frames (none, more than max_frames, or not 1 + the tensors of the type)",
    "header_too_large": "header frame larger than max_header_bytes",
    "tensor_too_large": "a tensor frame larger than max_tensor_bytes",
    "message_too_large": "all frames together larger than max_total_bytes",
    "bad_json": "header is not a strict UTF-8 JSON object (NaN, Infinity, duplicate keys refused)",
    "unsupported_version": "protocol version missing or not supported",
    "unknown_type": "message type missing or unknown",
    "bad_header": "envelope keys missing or unknown",
    "bad_type": "a header or body value has the wrong JSON type",
    "bad_fields": "body fields missing or unknown for this message type",
    "out_of_range": "a value is out of range, too long or has forbidden characters",
    "envelope_mismatch": "a message field disagrees with the envelope (encode side)",
    "bad_tensor_table": "tensor table malformed or its names differ from the type's tensors",
    "bad_dtype": "tensor dtype not allowed",
    "bad_shape": "tensor rank or dimensions not allowed",
    "size_mismatch": "prod(shape) * itemsize, nbytes and the frame length disagree",
    "non_finite": "a floating-point tensor holds NaN or infinity",
    "wrong_run": "message belongs to another run",
    "stale": "message from an older round than already seen from this peer",
    "replay": "sequence number not greater than the last accepted from this peer",
    "seq_ahead": "sequence number too far ahead of the last accepted (of the receiver's clock for a new session)",
    "future_round": "round or step ahead of anything the receiver has sent or can plausibly have missed",
    "malformed": "a value the codec could not check (a codec defect; reported by exception type only)",
    "reply_mismatch": "a reply does not answer the batch it claims to (run, round, step, attempt, shape)",
    "unexpected_message": "a valid message that the receiver does not expect in its current state",
    # raised by the services (coordinator/, sites/) on top of the codec
    "identity_mismatch": "the header's site differs from the peer's authenticated CURVE identity",
    "unknown_peer": "the authenticated peer is not a member of this federation",
    "not_welcomed": "the peer sent a run message before a completed Hello/Welcome handshake",
    "bad_policy": "a Hello's policy summary is malformed or not acceptable",
}

# ---------------------------------------------------------------------------------------------
# limits


@dataclass(frozen=True)
class WireLimits:
    """Upper bounds enforced before anything is allocated. Defaults fit [64, 4, 64, 64] float32
    (4 MiB a tensor) with room to spare; raise them for larger images or batches."""

    # frames in one message (header + tensors)
    max_frames: int = field(default=8, metadata=rng(min=1, max=64))
    # size of the JSON header frame
    max_header_bytes: int = field(default=64 * 1024, metadata=rng(min=256, max=16 * 2**20))
    # size of one tensor frame; also sets ZMQ_MAXMSGSIZE on the sockets
    max_tensor_bytes: int = field(default=16 * 2**20, metadata=rng(min=1, max=2**31))
    # all frames of one message together
    max_total_bytes: int = field(default=48 * 2**20, metadata=rng(min=1, max=2**33))
    # rank of a tensor
    max_dims: int = field(default=4, metadata=rng(min=1, max=8))
    # length of any one tensor dimension
    max_dim: int = field(default=4096, metadata=rng(min=1, max=2**31))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{f.name} must be a positive integer")
        if self.max_total_bytes < self.max_header_bytes:
            raise ValueError("max_total_bytes must be >= max_header_bytes")


def max_message_bytes(limits: WireLimits) -> int:
    """The largest single frame :func:`encode` produces (and :func:`decode` accepts) under
    ``limits``; the total of all frames is enforced by both. ZMQ_MAXMSGSIZE is this plus the
    transport's per-frame overhead (:func:`secgan.transport.max_message_bytes`)."""
    return max(limits.max_header_bytes, limits.max_tensor_bytes)


# ---------------------------------------------------------------------------------------------
# envelope


@dataclass(frozen=True)
class Envelope:
    """Routing and ordering information of one message (header frame minus body and tensors)."""

    version: int
    type: str
    run_id: str
    round: int
    step: int
    site: str
    seq: int


ENVELOPE_KEYS = frozenset({"v", "type", "run", "round", "step", "site", "seq", "body", "tensors"})
MIRRORED = {"run_id": "run_id", "round": "round", "step": "step"}  # message field -> Envelope attr

# ---------------------------------------------------------------------------------------------
# field specs: type check (stage "bad_type") and range check (stage "out_of_range") kept apart

_ID_RE = re.compile(r"[A-Za-z0-9._:-]*")


class _Spec:
    def type_ok(self, v: Any) -> bool:
        raise NotImplementedError

    def range_ok(self, v: Any) -> bool:
        raise NotImplementedError

    def convert(self, v: Any) -> Any:
        return v


class _Int(_Spec):
    def __init__(self, lo: int = 0, hi: int = MAX_INT) -> None:
        self.lo, self.hi = lo, hi

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def range_ok(self, v: Any) -> bool:
        return self.lo <= v <= self.hi


class _Bool(_Spec):
    def type_ok(self, v: Any) -> bool:
        return isinstance(v, bool)

    def range_ok(self, v: Any) -> bool:
        return True


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: int | float) -> bool:
    """Finite without converting: a JSON integer may be far beyond float range (10**400), and
    ``math.isfinite`` on such an int raises OverflowError. Python compares int and float exactly."""
    return isinstance(v, int) or math.isfinite(v)


def _as_float(v: int | float) -> float:
    # only called on range-checked values (so within float range); + 0.0 turns -0.0 into 0.0
    return float(v) + 0.0


class _OptFloat(_Spec):
    """None or a finite float in [lo, hi]; a JSON integer is accepted as a number."""

    def __init__(self, lo: float = 0.0, hi: float = 1e12) -> None:
        self.lo, self.hi = lo, hi

    def type_ok(self, v: Any) -> bool:
        return v is None or _is_number(v)

    def range_ok(self, v: Any) -> bool:
        return v is None or (_finite(v) and self.lo <= v <= self.hi)

    def convert(self, v: Any) -> Any:
        return None if v is None else _as_float(v)


class _Id(_Spec):
    """An identifier: ASCII letters, digits and ``._:-``."""

    def __init__(self, min_len: int = 1, max_len: int = 64) -> None:
        self.min_len, self.max_len = min_len, max_len

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, str)

    def range_ok(self, v: Any) -> bool:
        return self.min_len <= len(v) <= self.max_len and _ID_RE.fullmatch(v) is not None


class _Text(_Spec):
    """Free text for humans: printable (no control characters, no lone surrogates), bounded."""

    def __init__(self, max_len: int = 1024) -> None:
        self.max_len = max_len

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, str)

    def range_ok(self, v: Any) -> bool:
        return len(v) <= self.max_len and v.isprintable()


class _IntList(_Spec):
    def __init__(self, lo: int, hi: int, min_len: int = 1, max_len: int = 16) -> None:
        self.item = _Int(lo, hi)
        self.min_len, self.max_len = min_len, max_len

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, list) and all(self.item.type_ok(x) for x in v)

    def range_ok(self, v: Any) -> bool:
        return self.min_len <= len(v) <= self.max_len and all(self.item.range_ok(x) for x in v)

    def convert(self, v: Any) -> Any:
        return tuple(v)


class _Float(_Spec):
    """A finite float in (lo, hi] (``lo_open``) or [lo, hi]; a JSON integer is accepted as a number."""

    def __init__(self, lo: float, hi: float, *, lo_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def type_ok(self, v: Any) -> bool:
        return _is_number(v)

    def range_ok(self, v: Any) -> bool:
        return _finite(v) and (v > self.lo if self.lo_open else v >= self.lo) and v <= self.hi

    def convert(self, v: Any) -> Any:
        return _as_float(v)


_HEX_RE = re.compile(r"[0-9a-f]*")


class _Hex(_Spec):
    """Lowercase hex of an exact length (digests, X25519 public keys)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, str)

    def range_ok(self, v: Any) -> bool:
        return len(v) == self.length and _HEX_RE.fullmatch(v) is not None


class _IdKeyList(_Spec):
    """``[[id, 64-hex key], ...]`` (a secure-sum participant set); stays a list of lists."""

    def __init__(self, max_len: int = 1024) -> None:
        self.max_len = max_len
        self.id, self.key = _Id(1, 64), _Hex(64)

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, list) and all(
            isinstance(p, list) and len(p) == 2 and self.id.type_ok(p[0]) and self.key.type_ok(p[1]) for p in v
        )

    def range_ok(self, v: Any) -> bool:
        return 1 <= len(v) <= self.max_len and all(self.id.range_ok(p[0]) and self.key.range_ok(p[1]) for p in v)

    def convert(self, v: Any) -> Any:
        return [list(p) for p in v]


class _JsonObject(_Spec):
    """A small JSON object of plain values (policy summary, model parameters)."""

    def __init__(self, max_depth: int = 4, max_nodes: int = 256, max_str: int = 256) -> None:
        self.max_depth, self.max_nodes, self.max_str = max_depth, max_nodes, max_str

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, dict)

    def range_ok(self, v: Any) -> bool:
        budget = [self.max_nodes]

        def ok(x: Any, depth: int) -> bool:
            budget[0] -= 1
            if budget[0] < 0 or depth > self.max_depth:
                return False
            if x is None or isinstance(x, bool):
                return True
            if isinstance(x, int):
                return -MAX_INT <= x <= MAX_INT
            if isinstance(x, float):
                return math.isfinite(x)  # (strict JSON parsing already refuses overflowing floats)
            if isinstance(x, str):
                return len(x) <= self.max_str and x.isprintable()
            if isinstance(x, list):
                return all(ok(y, depth + 1) for y in x)
            if isinstance(x, dict):
                return all(
                    isinstance(k, str) and 0 < len(k) <= 64 and k.isprintable() and ok(y, depth + 1)
                    for k, y in x.items()
                )
            return False

        return ok(v, 0)


_ENVELOPE_SPECS: dict[str, _Spec] = {
    "v": _Int(1, 1000),
    "type": _Id(1, 32),
    # "" before the run is known (a site's Hello); types carrying a run_id need it non-empty
    "run": _Id(0, 64),
    "round": _Int(),
    "step": _Int(),
    "site": _Id(0, 64),
    "seq": _Int(),
}

# Body fields per message type (mirrored fields excluded). A unit test keeps this table and
# secgan.messages in step.
BODY_SPECS: dict[str, dict[str, _Spec]] = {
    "hello": {"versions": _IntList(1, 1000), "policy": _JsonObject(), "resume_step": _Int()},
    "welcome": {
        "version": _Int(1, 1000),
        "image_size": _Int(1, 4096),
        "model": _JsonObject(),
        "condition_source": _Id(1, 32),
        "aggregation": _Id(1, 32),
        "planned_steps": _Int(1, MAX_INT),
    },
    "fake_batch": {"attempt": _Int(0, 2**16)},
    "gradient": {"budget_left": _OptFloat(0.0, 1.0), "attempt": _Int(0, 2**16)},
    "refusal": {"code": _Id(1, 64), "reason": _Text(), "final": _Bool()},
    "heartbeat": {},
    "stop": {"reason": _Text()},
    "error": {"code": _Id(1, 64), "detail": _Text()},
    "secagg_announce": {
        "attempt": _Int(0, 2**16),
        "participants": _IdKeyList(),
        "frac_bits": _Int(0, 48),
        "clip": _Float(0.0, 1e12, lo_open=True),
        "modulus_bits": _Int(2, 63),
        "shape": _IntList(1, 2**31, 1, 8),
        "set_digest": _Hex(64),
    },
    "secagg_masked": {"attempt": _Int(0, 2**16), "set_digest": _Hex(64), "budget_left": _OptFloat(0.0, 1.0)},
}

# Codec allow-list: wire name -> (torch dtype, itemsize, floating?)
DTYPES: dict[str, tuple[torch.dtype, int, bool]] = {
    "float32": (torch.float32, 4, True),
    "float16": (torch.float16, 2, True),
    "bfloat16": (torch.bfloat16, 2, True),
    "int64": (torch.int64, 8, False),
    "uint8": (torch.uint8, 1, False),
}
_DTYPE_NAMES = {v[0]: k for k, v in DTYPES.items()}

# Tensor fields per message type, in frame order, with the dtypes each may have.
# GradientReply.grad is int64 in secure-sum mode (fixed point mod 2^k).
TENSOR_SPECS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "fake_batch": (("cond", ("float32",)), ("fake", ("float32",))),
    "gradient": (("grad", ("float32", "int64")),),
    # ring elements mod 2^k (k <= 63) reinterpreted as int64, in the announced (gradient) shape
    "secagg_masked": (("masked", ("int64",)),),
}

TENSOR_KEYS = frozenset({"name", "dtype", "shape", "nbytes"})
_RUN_BOUND_TYPES = frozenset(
    t for t, cls in MESSAGE_TYPES.items() if "run_id" in {f.name for f in dataclasses.fields(cls)}
)


def _fail(code: str, detail: str = "") -> ProtocolError:
    return ProtocolError(code, detail)


# ---------------------------------------------------------------------------------------------
# header checks shared by encode and decode


def _check_header(header: dict, n_frames: int) -> tuple[Envelope, dict[str, Any]]:
    """Stages 5-12. Returns the envelope and the converted body fields."""
    v = header.get("v")
    if not (_Int().type_ok(v) and v in SUPPORTED_VERSIONS):
        raise _fail("unsupported_version")
    mtype = header.get("type")
    if not isinstance(mtype, str) or mtype not in MESSAGE_TYPES:
        raise _fail("unknown_type")
    tspecs = TENSOR_SPECS.get(mtype, ())
    if n_frames != 1 + len(tspecs):
        raise _fail("frame_count", f"{mtype} needs {1 + len(tspecs)} frames, got {n_frames}")
    keys = set(header)
    if keys != ENVELOPE_KEYS:
        missing, extra = sorted(ENVELOPE_KEYS - keys), sorted(keys - ENVELOPE_KEYS)
        raise _fail("bad_header", f"missing {missing}, unknown {len(extra)} key(s)" if extra else f"missing {missing}")
    for k, spec in _ENVELOPE_SPECS.items():
        if not spec.type_ok(header[k]):
            raise _fail("bad_type", f"envelope.{k}")
    body = header["body"]
    if not isinstance(body, dict):
        raise _fail("bad_type", "envelope.body")
    if not isinstance(header["tensors"], list):
        raise _fail("bad_type", "envelope.tensors")
    specs = BODY_SPECS[mtype]
    if set(body) != set(specs):
        missing = sorted(set(specs) - set(body))
        raise _fail("bad_fields", f"{mtype}: missing {missing}, {len(set(body) - set(specs))} unknown")
    for k, spec in specs.items():
        if not spec.type_ok(body[k]):
            raise _fail("bad_type", f"{mtype}.{k}")
    for k, spec in _ENVELOPE_SPECS.items():
        if not spec.range_ok(header[k]):
            raise _fail("out_of_range", f"envelope.{k}")
    if mtype in _RUN_BOUND_TYPES and not header["run"]:
        raise _fail("out_of_range", "envelope.run must be set for this type")
    for k, spec in specs.items():
        if not spec.range_ok(body[k]):
            raise _fail("out_of_range", f"{mtype}.{k}")
    env = Envelope(
        version=header["v"],
        type=mtype,
        run_id=header["run"],
        round=header["round"],
        step=header["step"],
        site=header["site"],
        seq=header["seq"],
    )
    return env, {k: spec.convert(body[k]) for k, spec in specs.items()}


def _check_table(mtype: str, table: list) -> list[tuple[str, str, tuple[int, ...], int]]:
    """Stage 13: structure of the tensor table."""
    tspecs = TENSOR_SPECS.get(mtype, ())
    if len(table) != len(tspecs):
        raise _fail("bad_tensor_table", f"{mtype} has {len(tspecs)} tensors, table lists {len(table)}")
    out = []
    for entry, (name, _) in zip(table, tspecs):
        if not isinstance(entry, dict) or set(entry) != TENSOR_KEYS:
            raise _fail("bad_tensor_table", f"entry for {name}")
        if entry["name"] != name:
            raise _fail("bad_tensor_table", f"expected tensor {name}")
        shape = entry["shape"]
        if (
            not isinstance(entry["dtype"], str)
            or not isinstance(shape, list)
            or not all(_Int(0, MAX_INT).type_ok(d) for d in shape)
            or not _Int().type_ok(entry["nbytes"])
        ):
            raise _fail("bad_tensor_table", f"types in entry {name}")
        out.append((name, entry["dtype"], tuple(shape), entry["nbytes"]))
    return out


def _check_tensor_meta(
    mtype: str, table: list[tuple[str, str, tuple[int, ...], int]], sizes: Sequence[int], limits: WireLimits
) -> None:
    """Stages 14-16, each stage over all tensors before the next."""
    allowed = dict(TENSOR_SPECS.get(mtype, ()))
    for name, dtype, _, _ in table:
        if dtype not in DTYPES or dtype not in allowed[name]:
            raise _fail("bad_dtype", f"{name}: {dtype[:16]!r}")
    for name, _, shape, _ in table:
        if len(shape) > limits.max_dims or not all(1 <= d <= limits.max_dim for d in shape):
            raise _fail("bad_shape", f"{name}: rank {len(shape)}")
    for (name, dtype, shape, nbytes), size in zip(table, sizes):
        if math.prod(shape) * DTYPES[dtype][1] != nbytes or nbytes != size:
            raise _fail("size_mismatch", name)


def _check_tensor_semantics(mtype: str, tensors: dict[str, torch.Tensor]) -> None:
    """Stages 17-18."""
    if mtype == "fake_batch":
        cond, fake = tensors["cond"], tensors["fake"]
        if cond.dim() != 4 or cond.shape[1] != 4 or cond.shape != fake.shape:
            raise _fail("bad_shape", "fake_batch: cond and fake must both be [B, 4, H, W]")
    elif mtype == "gradient":
        if tensors["grad"].dim() != 4 or tensors["grad"].shape[1] != 4:
            raise _fail("bad_shape", "gradient: grad must be [B, 4, H, W]")
    for name, t in tensors.items():
        if t.is_floating_point() and not _all_finite(t):
            raise _fail("non_finite", name)


def _all_finite(t: torch.Tensor) -> bool:
    # min and max propagate NaN and expose +-inf, so both finite <=> every element finite;
    # an order of magnitude faster than isfinite().all() on CPU builds
    if t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t.detach().reshape(-1))
    return math.isfinite(float(lo)) and math.isfinite(float(hi))


# ---------------------------------------------------------------------------------------------
# tensor <-> bytes

_LITTLE = sys.byteorder == "little"


def _swap(t: torch.Tensor) -> torch.Tensor:
    """Reverse the byte order of every element (only used on big-endian hosts)."""
    size = t.element_size()
    if size == 1:
        return t
    raw = t.reshape(-1).view(torch.uint8).reshape(-1, size).flip(-1).contiguous()
    return raw.view(t.dtype).reshape(t.shape)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if not _LITTLE:
        t = _swap(t)
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def _tensor_from(buf: memoryview, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    # bytearray(...) copies: the tensor owns writable memory and never aliases a ZeroMQ frame
    t = torch.frombuffer(bytearray(buf), dtype=DTYPES[dtype][0]).reshape(shape)
    return t if _LITTLE else _swap(t)


# ---------------------------------------------------------------------------------------------
# public API


def encode(
    msg: Message,
    *,
    run_id: str,
    round: int,
    step: int,
    site: str,
    seq: int,
    limits: WireLimits | None = None,
) -> list[bytes]:
    """Frames for ``msg``. Checks the same rules as :func:`decode` (sizes only when ``limits``
    is given), so a peer never receives what it would refuse. ProtocolError on failure."""
    mtype = getattr(type(msg), "TYPE", None)
    if mtype not in MESSAGE_TYPES or MESSAGE_TYPES[mtype] is not type(msg):
        raise _fail("unknown_type", type(msg).__name__)
    given = {"run_id": run_id, "round": round, "step": step}
    body: dict[str, Any] = {}
    tensor_names = {n for n, _ in TENSOR_SPECS.get(mtype, ())}
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if f.name in MIRRORED:
            if value != given[f.name] or type(value) is not type(given[f.name]):
                raise _fail("envelope_mismatch", f"{mtype}.{f.name}")
        elif f.name not in tensor_names:
            body[f.name] = list(value) if isinstance(value, tuple) else value
    tensors: dict[str, torch.Tensor] = {}
    table = []
    frames: list[bytes] = []
    for name, _ in TENSOR_SPECS.get(mtype, ()):
        t = getattr(msg, name)
        if not isinstance(t, torch.Tensor):
            raise _fail("bad_type", f"{mtype}.{name} must be a torch.Tensor")
        dtype = _DTYPE_NAMES.get(t.dtype)
        if dtype is None:
            raise _fail("bad_dtype", f"{name}: {t.dtype}")
        raw = _tensor_bytes(t)
        tensors[name] = t
        table.append({"name": name, "dtype": dtype, "shape": list(t.shape), "nbytes": len(raw)})
        frames.append(raw)
    header = {
        "v": PROTOCOL_VERSION,
        "type": mtype,
        "run": run_id,
        "round": round,
        "step": step,
        "site": site,
        "seq": seq,
        "body": body,
        "tensors": table,
    }
    _check_header(header, 1 + len(frames))
    try:
        head = json.dumps(header, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError):
        raise _fail("bad_type", f"{mtype}: body not JSON-representable") from None
    checked = _check_table(mtype, table)
    _check_tensor_meta(mtype, checked, [len(f) for f in frames], limits or _UNBOUNDED)
    _check_tensor_semantics(mtype, tensors)
    if limits is not None:
        _check_sizes([head, *frames], limits)
    return [head, *frames]


_UNBOUNDED = WireLimits(max_dims=8, max_dim=2**31, max_tensor_bytes=2**31, max_total_bytes=2**33)


def _check_sizes(views: Sequence[Any], limits: WireLimits) -> None:
    if len(views[0]) > limits.max_header_bytes:
        raise _fail("header_too_large")
    total = len(views[0])
    for i, f in enumerate(views[1:], start=1):
        if len(f) > limits.max_tensor_bytes:
            raise _fail("tensor_too_large", f"frame {i}")
        total += len(f)
    if total > limits.max_total_bytes:
        raise _fail("message_too_large")


def _as_view(frame: Any) -> memoryview:
    if isinstance(frame, str):  # str has no buffer protocol anyway; be explicit
        raise TypeError
    view = memoryview(frame)
    return view if view.format in ("B", "b", "c") and view.ndim == 1 else view.cast("B")


def decode(frames: Sequence[Any], *, limits: WireLimits = WireLimits()) -> tuple[Envelope, Message]:
    """Validate ``frames`` (bytes, bytearray, memoryview or zmq.Frame) and build the message.

    Raises only :class:`ProtocolError`; the code names the first failed check (module docstring).
    An exception no check anticipated (a codec defect) becomes ``malformed``, named by its type
    only: one frame never takes a receiver down.
    """
    try:
        return _decode(frames, limits)
    except ProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - the codec's promise: nothing but ProtocolError escapes
        raise _fail("malformed", type(exc).__name__) from None


def _decode(frames: Sequence[Any], limits: WireLimits) -> tuple[Envelope, Message]:
    try:
        views = [_as_view(f) for f in frames]
    except (TypeError, ValueError, BufferError):
        raise _fail("bad_frame") from None
    if not 1 <= len(views) <= limits.max_frames:
        raise _fail("frame_count", f"{len(views)} frames")
    _check_sizes(views, limits)
    try:
        header = parse_strict_json(views[0])
    except ValueError as exc:
        raise _fail("bad_json", str(exc)) from None
    if not isinstance(header, dict):
        raise _fail("bad_json", "header is not an object")
    env, body = _check_header(header, len(views))
    table = _check_table(env.type, header["tensors"])
    _check_tensor_meta(env.type, table, [len(v) for v in views[1:]], limits)
    tensors = {name: _tensor_from(v, dtype, shape) for (name, dtype, shape, _), v in zip(table, views[1:])}
    _check_tensor_semantics(env.type, tensors)
    cls = MESSAGE_TYPES[env.type]
    names = {f.name for f in dataclasses.fields(cls)}
    mirrored = {k: getattr(env, a) for k, a in MIRRORED.items() if k in names}
    return env, cls(**body, **tensors, **mirrored)


def check_reply_matches(batch: FakeBatch, reply: GradientReply) -> None:
    """A GradientReply must answer exactly the FakeBatch it names: same run, round, step, attempt
    and a grad of the fake's shape. ProtocolError("reply_mismatch") otherwise."""
    if (reply.run_id, reply.round, reply.step, reply.attempt) != (batch.run_id, batch.round, batch.step, batch.attempt):
        raise _fail("reply_mismatch", "run, round, step or attempt")
    if tuple(reply.grad.shape) != tuple(batch.fake.shape):
        raise _fail("reply_mismatch", "grad shape")


# ---------------------------------------------------------------------------------------------
# protocol state


@dataclass(frozen=True)
class _PeerState:
    run_id: str
    round: int
    step: int
    seq: int


# A site's seq grows by one per message it sends (dropped sends included), so a gap larger than
# this within one session is not a gap but a forged number. (The coordinator's seq is shared by
# all its peers: sites bound it by the clock only.)
MAX_SEQ_AHEAD = 2**20
# A new session's first seq comes from :func:`initial_seq` (microseconds since the epoch) on the
# sender's clock: at most this far ahead of the receiver's clock.
MAX_CLOCK_AHEAD_US = 24 * 3600 * 10**6


class ReplayGuard:
    """Drops stale, replayed and implausible messages, per authenticated peer.

    Keep one guard per receiving socket and key it by the peer's authenticated identity (the ZAP
    User-Id / CURVE public key), never by the ``site`` name a message claims.

    :meth:`check` only looks; :meth:`commit` remembers. Call ``check`` before the receiver's own
    checks and ``commit`` only once the message was accepted by all of them, so a message that is
    refused later (a reply for a round never sent, a Welcome in the wrong stage) never moves the
    peer's state. Rules, in order:

    - ``wrong_run``: the run id differs from ``run_id`` (when the guard was given one) or from the
      first run id accepted from this peer. An empty run id is tolerated only on ``hello`` (a site
      that does not know the run yet);
    - ``future_round``: round above ``max_round`` / step above ``max_step`` (what the receiver has
      sent, when it knows), or more than ``max_round_ahead`` rounds / steps beyond the newest
      accepted from this peer (when it does not);
    - ``stale``: the round is older than the newest round accepted from this peer;
    - ``replay``: the sequence number is not strictly greater than the last accepted one;
    - ``seq_ahead``: the sequence number is more than ``max_clock_ahead_us`` beyond ``clock()``
      (an :func:`initial_seq` grows by one a message, far slower than the clock), or more than
      ``max_seq_ahead`` beyond the last accepted one (None: no such window, for a peer whose
      numbering is shared with others, like the coordinator's).

    ``new_session=True`` (a Hello, or a "you have no session" error) checks and commits the
    message as the first of a new session: the peer's old round and seq are not compared with and
    are replaced on commit. Senders keep ``seq`` increasing within a session; starting a process at
    :func:`initial_seq` keeps it plausible across restarts.
    """

    def __init__(self, *, run_id: str | None = None, max_seq_ahead: int | None = MAX_SEQ_AHEAD,
                 max_round_ahead: int | None = None, max_clock_ahead_us: int = MAX_CLOCK_AHEAD_US,
                 clock: Callable[[], int] | None = None) -> None:
        self.run_id = run_id
        self.max_seq_ahead = max_seq_ahead
        self.max_round_ahead = max_round_ahead
        self.max_clock_ahead_us = max_clock_ahead_us
        self.clock = clock or initial_seq
        self._peers: dict[Hashable, _PeerState] = {}
        self.counts: Counter[str] = Counter()

    def _state(self, envelope: Envelope, peer: Hashable | None, new_session: bool) -> tuple[Hashable, _PeerState | None]:
        key = envelope.site if peer is None else peer
        return key, (None if new_session else self._peers.get(key))

    def check(self, envelope: Envelope, *, peer: Hashable | None = None, new_session: bool = False,
              max_round: int | None = None, max_step: int | None = None) -> None:
        """Raise ProtocolError(wrong_run|future_round|stale|replay|seq_ahead); change nothing."""
        _, state = self._state(envelope, peer, new_session)
        run = envelope.run_id
        expected = self.run_id if self.run_id is not None else (state.run_id if state and state.run_id else None)
        if run == "" and envelope.type == "hello":
            pass
        elif expected is not None and run != expected:
            self._drop("wrong_run")
        if max_round is not None and envelope.round > max_round:
            self._drop("future_round")
        if max_step is not None and envelope.step > max_step:
            self._drop("future_round")
        if envelope.seq > self.clock() + self.max_clock_ahead_us:
            self._drop("seq_ahead")
        if state is None:
            return
        if self.max_round_ahead is not None and (envelope.round > state.round + self.max_round_ahead
                                                 or envelope.step > state.step + self.max_round_ahead):
            self._drop("future_round")
        if envelope.round < state.round:
            self._drop("stale")
        if envelope.seq <= state.seq:
            self._drop("replay")
        if self.max_seq_ahead is not None and envelope.seq > state.seq + self.max_seq_ahead:
            self._drop("seq_ahead")

    def commit(self, envelope: Envelope, *, peer: Hashable | None = None, new_session: bool = False) -> None:
        """Remember an accepted message (call only after :meth:`check` and every later check passed)."""
        key, state = self._state(envelope, peer, new_session)
        self._peers[key] = _PeerState(
            run_id=(state.run_id if state and state.run_id else envelope.run_id),
            round=max(envelope.round, state.round if state else 0),
            step=max(envelope.step, state.step if state else 0),
            seq=envelope.seq,
        )

    def accept(self, envelope: Envelope, *, peer: Hashable | None = None, new_session: bool = False,
               max_round: int | None = None, max_step: int | None = None) -> None:
        """:meth:`check` then :meth:`commit`, for a receiver with no checks of its own in between."""
        self.check(envelope, peer=peer, new_session=new_session, max_round=max_round, max_step=max_step)
        self.commit(envelope, peer=peer, new_session=new_session)

    def last_round(self, peer: Hashable) -> int | None:
        state = self._peers.get(peer)
        return None if state is None else state.round

    def forget(self, peer: Hashable) -> None:
        self._peers.pop(peer, None)

    def _drop(self, code: str) -> None:
        self.counts[code] += 1
        raise _fail(code)


def initial_seq() -> int:
    """A starting sequence number that grows across process restarts (microseconds since the
    epoch; far below 2^53)."""
    import time

    return time.time_ns() // 1000
