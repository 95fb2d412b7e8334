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

Message fields declared ``envelope()`` in :mod:`secgan.net.schema` (``run_id``, ``round``,
``step``) are carried once, in the envelope (``run``, ``round``, ``step``), and left out of ``body``; :func:`encode` refuses a message whose fields
disagree with the envelope arguments (``envelope_mismatch``).

:func:`decode` validates in a fixed order and raises :class:`ProtocolError` with the code of the
FIRST failed check (codes and meanings in :data:`secgan.net.errors.PROTOCOL_ERRORS`):

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
17. tensor shape patterns declared in the schema (e.g. FakeBatch [B,4,H,W] twice) ... bad_shape
18. tensor values: floating tensors finite ........................ non_finite

Body and tensor specs come from the declarations in :mod:`secgan.net.schema`. Protocol state
(run id, round, step, sequence number) is checked afterwards by
:class:`secgan.net.replay.ReplayGuard` (wrong_run, future_round, stale, replay, seq_ahead), by the
caller, per authenticated peer; the guard remembers a message only when the caller commits it
after all of its own checks. :func:`check_tensors` runs stages 14, 17 and 18 on a message object,
for a receiver handed one without the codec (the in-process runner).

What is shared and what is copied (zero-copy on both ends, one rule each):

- :func:`encode` returns the header as ``bytes`` and each tensor frame as a read-only
  ``memoryview`` over the tensor's own CPU buffer: no copy for a C-contiguous CPU tensor on a
  little-endian host (a tensor that is not contiguous, not on the CPU, or on a big-endian host is
  copied once into a contiguous little-endian buffer first). Sent with
  ``send_multipart(copy=False)``, libzmq reads that memory when it writes the frame out, so a sender
  never mutates a tensor it has put in a message (messages are frozen; the coordinator's fakes and
  the sites' gradients are fresh tensors each step).
- :func:`decode` views a received ``zmq.Frame`` (``recv_multipart(copy=False)``): the tensor is
  ``torch.frombuffer`` over the frame's own memory, which the tensor keeps alive and which no other
  party holds (over tcp and ipc libzmq owns the bytes it read from the socket). The view is taken only
  after stages 1-16 passed, and stages 17-18 run on it before the message is built, so nothing uses an
  unchecked buffer. A frame whose start is not aligned to the dtype's item size is copied.
- Every other buffer (``bytes``, ``bytearray``, ``memoryview``, e.g. an in-process
  ``decode(encode(msg))``) is copied into memory the decoded tensor owns: a decoded tensor never
  aliases a buffer its sender can still mutate in-process. (An ``inproc://`` zmq socket with
  ``copy=False`` hands the sender's buffer through to the receiver; the federation's sockets are tcp.)

Decoded tensors are writable and contiguous; writing one changes only that message's memory.
Byte order on the wire is little-endian, whatever the host.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from typing import Any, Sequence

import torch
import zmq

from secgan.core.errors import ProtocolError
from secgan.core.strictjson import parse_strict_json
from secgan.net.errors import fail
from secgan.net.fields import MAX_INT, Id, Int, Spec
from secgan.net.limits import WireLimits
from secgan.net.schema import (
    BODY_SPECS, MESSAGE_TYPES, MIRRORED, PROTOCOL_VERSION, SUPPORTED_VERSIONS, TENSOR_SPECS, Envelope, ErrorReply, Message,
)
ENVELOPE_KEYS = frozenset({"v", "type", "run", "round", "step", "site", "seq", "body", "tensors"})

_ENVELOPE_SPECS: dict[str, Spec] = {
    "v": Int(1, 1000),
    "type": Id(1, 32),
    # "" before the run is known (a site's Hello); types carrying a run_id need it non-empty
    "run": Id(0, 64),
    "round": Int(),
    "step": Int(),
    "site": Id(0, 64),
    "seq": Int(),
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

TENSOR_KEYS = frozenset({"name", "dtype", "shape", "nbytes"})
_RUN_BOUND_TYPES = frozenset(
    t for t, cls in MESSAGE_TYPES.items() if "run_id" in {f.name for f in dataclasses.fields(cls)}
)


# ---------------------------------------------------------------------------------------------
# header checks shared by encode and decode


def _check_header(header: dict, n_frames: int) -> tuple[Envelope, dict[str, Any]]:
    """Stages 5-12. Returns the envelope and the converted body fields."""
    v = header.get("v")
    if not (Int().type_ok(v) and v in SUPPORTED_VERSIONS):
        raise fail("unsupported_version")
    mtype = header.get("type")
    if not isinstance(mtype, str) or mtype not in MESSAGE_TYPES:
        raise fail("unknown_type")
    tspecs = TENSOR_SPECS.get(mtype, ())
    if n_frames != 1 + len(tspecs):
        raise fail("frame_count", f"{mtype} needs {1 + len(tspecs)} frames, got {n_frames}")
    keys = set(header)
    if keys != ENVELOPE_KEYS:
        missing, extra = sorted(ENVELOPE_KEYS - keys), sorted(keys - ENVELOPE_KEYS)
        raise fail("bad_header", f"missing {missing}, unknown {len(extra)} key(s)" if extra else f"missing {missing}")
    for k, spec in _ENVELOPE_SPECS.items():
        if not spec.type_ok(header[k]):
            raise fail("bad_type", f"envelope.{k}")
    body = header["body"]
    if not isinstance(body, dict):
        raise fail("bad_type", "envelope.body")
    if not isinstance(header["tensors"], list):
        raise fail("bad_type", "envelope.tensors")
    specs = BODY_SPECS[mtype]
    if set(body) != set(specs):
        missing = sorted(set(specs) - set(body))
        raise fail("bad_fields", f"{mtype}: missing {missing}, {len(set(body) - set(specs))} unknown")
    for k, spec in specs.items():
        if not spec.type_ok(body[k]):
            raise fail("bad_type", f"{mtype}.{k}")
    for k, spec in _ENVELOPE_SPECS.items():
        if not spec.range_ok(header[k]):
            raise fail("out_of_range", f"envelope.{k}")
    if mtype in _RUN_BOUND_TYPES and not header["run"]:
        raise fail("out_of_range", "envelope.run must be set for this type")
    for k, spec in specs.items():
        if not spec.range_ok(body[k]):
            raise fail("out_of_range", f"{mtype}.{k}")
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
        raise fail("bad_tensor_table", f"{mtype} has {len(tspecs)} tensors, table lists {len(table)}")
    out = []
    for entry, (name, _) in zip(table, tspecs):
        if not isinstance(entry, dict) or set(entry) != TENSOR_KEYS:
            raise fail("bad_tensor_table", f"entry for {name}")
        if entry["name"] != name:
            raise fail("bad_tensor_table", f"expected tensor {name}")
        shape = entry["shape"]
        if (
            not isinstance(entry["dtype"], str)
            or not isinstance(shape, list)
            or not all(Int(0, MAX_INT).type_ok(d) for d in shape)
            or not Int().type_ok(entry["nbytes"])
        ):
            raise fail("bad_tensor_table", f"types in entry {name}")
        out.append((name, entry["dtype"], tuple(shape), entry["nbytes"]))
    return out


def _check_tensor_meta(
    mtype: str, table: list[tuple[str, str, tuple[int, ...], int]], sizes: Sequence[int], limits: WireLimits
) -> None:
    """Stages 14-16, each stage over all tensors before the next."""
    allowed = {n: spec.dtypes for n, spec in TENSOR_SPECS.get(mtype, ())}
    for name, dtype, _, _ in table:
        if dtype not in DTYPES or dtype not in allowed[name]:
            raise fail("bad_dtype", f"{name}: {dtype[:16]!r}")
    for name, _, shape, _ in table:
        if len(shape) > limits.max_dims or not all(1 <= d <= limits.max_dim for d in shape):
            raise fail("bad_shape", f"{name}: rank {len(shape)}")
    for (name, dtype, shape, nbytes), size in zip(table, sizes):
        if math.prod(shape) * DTYPES[dtype][1] != nbytes or nbytes != size:
            raise fail("size_mismatch", name)


def _check_tensor_semantics(mtype: str, tensors: dict[str, torch.Tensor]) -> None:
    """Stages 17-18: the shape patterns the schema declares, then finiteness."""
    bound: dict[str, int] = {}
    for name, spec in TENSOR_SPECS.get(mtype, ()):
        if spec.shape is None:
            continue
        shape = tuple(tensors[name].shape)
        ok = len(shape) == len(spec.shape)
        for want, got in zip(spec.shape, shape) if ok else ():
            ok = ok and (got == want if isinstance(want, int) else bound.setdefault(want, got) == got)
        if not ok:
            pattern = ", ".join(str(d) for d in spec.shape)
            raise fail("bad_shape", f"{mtype}: {name} must be [{pattern}] like the message's other tensors")
    for name, t in tensors.items():
        if t.is_floating_point() and not all_finite(t):
            raise fail("non_finite", name)


def check_tensors(msg: Message) -> None:
    """Stages 14 (the field's dtype allow-list), 17 and 18 on a message object: the tensor checks
    every encoded and decoded message passes, for a receiver handed a message without the codec
    (the in-process runner). A tensor field that is not a tensor is ``bad_type``."""
    mtype = type(msg).TYPE
    tensors: dict[str, torch.Tensor] = {}
    for name, spec in TENSOR_SPECS.get(mtype, ()):
        t = getattr(msg, name)
        if not isinstance(t, torch.Tensor):
            raise fail("bad_type", f"{mtype}.{name} must be a torch.Tensor")
        if _DTYPE_NAMES.get(t.dtype) not in spec.dtypes:
            raise fail("bad_dtype", f"{name}: {t.dtype}")
        tensors[name] = t
    _check_tensor_semantics(mtype, tensors)


def all_finite(t: torch.Tensor) -> bool:
    """Every element finite. First the sum: +-inf and NaN are sticky under IEEE addition, so a
    finite sum proves every element finite (one pass, cheaper than a copy). A non-finite sum may
    also be an overflow of huge finite values, so it is settled exactly: min and max propagate NaN
    and expose +-inf, so both finite <=> every element finite. Both are an order of magnitude
    faster than isfinite().all() on CPU builds."""
    if t.numel() == 0:
        return True
    flat = t.detach().reshape(-1)
    if math.isfinite(float(flat.sum())):
        return True
    lo, hi = torch.aminmax(flat)
    return math.isfinite(float(lo)) and math.isfinite(float(hi))


# ---------------------------------------------------------------------------------------------
# tensor <-> frames (what is shared and what is copied: module docstring)

_LITTLE = sys.byteorder == "little"


def _swap(t: torch.Tensor) -> torch.Tensor:
    """Reverse the byte order of every element (only used on big-endian hosts)."""
    size = t.element_size()
    if size == 1:
        return t
    raw = t.reshape(-1).view(torch.uint8).reshape(-1, size).flip(-1).contiguous()
    return raw.view(t.dtype).reshape(t.shape)


def _tensor_frame(t: torch.Tensor) -> memoryview:
    """A read-only byte view of ``t``'s C-contiguous little-endian buffer (copied only when ``t``
    is not contiguous, not on the CPU, or the host is big-endian). The view keeps the buffer alive."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if not _LITTLE:
        t = _swap(t)
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()).toreadonly()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """The tensor's wire bytes as one ``bytes`` object (a copy of :func:`_tensor_frame`)."""
    return bytes(_tensor_frame(t))


def _tensor_from(buf: memoryview, dtype: str, shape: tuple[int, ...], *, frame: Any = None) -> torch.Tensor:
    """A tensor over ``buf``: a view when ``frame`` is the received ``zmq.Frame`` it came from,
    else a copy (module docstring)."""
    torch_dtype, itemsize, _ = DTYPES[dtype]
    t = None
    if isinstance(frame, zmq.Frame) and not buf.readonly and len(buf):
        t = torch.frombuffer(buf, dtype=torch_dtype)  # a view: the received frame's own memory
        if t.data_ptr() % itemsize:
            t = t.clone()  # a misaligned start: an aligned copy the tensor owns
    if t is None:
        # bytearray(...) copies: the tensor owns writable memory and never aliases the caller's buffer
        t = torch.frombuffer(bytearray(buf), dtype=torch_dtype)
    t = t.reshape(shape)
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
) -> list[bytes | memoryview]:
    """Frames for ``msg``: the header (``bytes``) and one read-only ``memoryview`` over each tensor's
    own buffer (module docstring: what is shared). Checks the same rules as :func:`decode` (sizes
    only when ``limits`` is given), so a peer never receives what it would refuse. ProtocolError on
    failure."""
    mtype = getattr(type(msg), "TYPE", None)
    if mtype not in MESSAGE_TYPES or MESSAGE_TYPES[mtype] is not type(msg):
        raise fail("unknown_type", type(msg).__name__)
    given = {"run_id": run_id, "round": round, "step": step}
    body: dict[str, Any] = {}
    tensor_names = {n for n, _ in TENSOR_SPECS.get(mtype, ())}
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if f.name in MIRRORED:
            if value != given[f.name] or type(value) is not type(given[f.name]):
                raise fail("envelope_mismatch", f"{mtype}.{f.name}")
        elif f.name not in tensor_names:
            body[f.name] = list(value) if isinstance(value, tuple) else value
    tensors: dict[str, torch.Tensor] = {}
    table = []
    frames: list[memoryview] = []
    for name, _ in TENSOR_SPECS.get(mtype, ()):
        t = getattr(msg, name)
        if not isinstance(t, torch.Tensor):
            raise fail("bad_type", f"{mtype}.{name} must be a torch.Tensor")
        dtype = _DTYPE_NAMES.get(t.dtype)
        if dtype is None:
            raise fail("bad_dtype", f"{name}: {t.dtype}")
        raw = _tensor_frame(t)
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
        raise fail("bad_type", f"{mtype}: body not JSON-representable") from None
    checked = _check_table(mtype, table)
    _check_tensor_meta(mtype, checked, [len(f) for f in frames], limits or _UNBOUNDED)
    _check_tensor_semantics(mtype, tensors)
    if limits is not None:
        _check_sizes([head, *frames], limits)
    return [head, *frames]


_UNBOUNDED = WireLimits(max_dims=8, max_dim=2**31, max_tensor_bytes=2**31, max_total_bytes=2**33)


def _check_sizes(views: Sequence[Any], limits: WireLimits) -> None:
    if len(views[0]) > limits.max_header_bytes:
        raise fail("header_too_large")
    total = len(views[0])
    for i, f in enumerate(views[1:], start=1):
        if len(f) > limits.max_tensor_bytes:
            raise fail("tensor_too_large", f"frame {i}")
        total += len(f)
    if total > limits.max_total_bytes:
        raise fail("message_too_large")


def _as_view(frame: Any) -> memoryview:
    if isinstance(frame, str):  # str has no buffer protocol anyway; be explicit
        raise TypeError
    view = memoryview(frame)
    return view if view.format in ("B", "b", "c") and view.ndim == 1 else view.cast("B")


def answerable(exc: ProtocolError, msg: Message | None) -> bool:
    """Whether a refused message may be answered with an ErrorReply: never when it was itself an
    error report (``msg`` decoded as one, or ``exc.about_an_error``), so two peers that cannot read
    each other never trade error replies for ever."""
    return not (exc.about_an_error or isinstance(msg, ErrorReply))


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
        raise fail("malformed", type(exc).__name__) from None


def _decode(frames: Sequence[Any], limits: WireLimits) -> tuple[Envelope, Message]:
    try:
        views = [_as_view(f) for f in frames]
    except (TypeError, ValueError, BufferError):
        raise fail("bad_frame") from None
    if not 1 <= len(views) <= limits.max_frames:
        raise fail("frame_count", f"{len(views)} frames")
    _check_sizes(views, limits)
    try:
        header = parse_strict_json(views[0])
    except ValueError as exc:
        raise fail("bad_json", str(exc)) from None
    if not isinstance(header, dict):
        raise fail("bad_json", "header is not an object")
    try:
        return _decode_body(header, frames, views, limits)
    except ProtocolError as exc:
        exc.about_an_error = header.get("type") == ErrorReply.TYPE
        raise


def _decode_body(header: dict, frames: Sequence[Any], views: list[memoryview], limits: WireLimits) -> tuple[Envelope, Message]:
    env, body = _check_header(header, len(views))
    table = _check_table(env.type, header["tensors"])
    _check_tensor_meta(env.type, table, [len(v) for v in views[1:]], limits)
    tensors = {name: _tensor_from(v, dtype, shape, frame=f)
               for (name, dtype, shape, _), f, v in zip(table, frames[1:], views[1:])}
    _check_tensor_semantics(env.type, tensors)
    cls = MESSAGE_TYPES[env.type]
    names = {f.name for f in dataclasses.fields(cls)}
    mirrored = {k: getattr(env, a) for k, a in MIRRORED.items() if k in names}
    return env, cls(**body, **tensors, **mirrored)


