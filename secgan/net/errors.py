"""The protocol error catalogue: every code a :class:`~secgan.core.errors.ProtocolError` on the wire
may carry, codec and services alike, with its meaning (sent as an ErrorReply's detail)."""

from __future__ import annotations

from secgan.core.errors import ProtocolError

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
    "unexpected_message": "a valid message that the receiver does not expect in its current state",
    # raised by the services (coordinator/, sites/) on top of the codec
    "identity_mismatch": "the header's site differs from the peer's authenticated CURVE identity",
    "unknown_peer": "the authenticated peer is not a member of this federation",
    "not_welcomed": "the peer sent a run message before a completed Hello/Welcome handshake",
    "bad_policy": "a Hello's policy summary is malformed or not acceptable",
}


def fail(code: str, detail: str = "") -> ProtocolError:
    """The ProtocolError for ``code``."""
    return ProtocolError(code, detail)
