"""Every error secgan raises on purpose. Callers catch these, never bare Exception.

Each carries a message that names what is wrong (a file, a key, a field) and never a payload,
a key or a patient identifier.
"""


class SecganError(Exception):
    """Base class of every deliberate secgan error."""


class ConfigError(SecganError):
    """A configuration file or value is invalid; the message names the key."""


class DataError(SecganError):
    """Input data (NIfTI, split file, synthetic folder) is malformed; the message names the file."""


class ProtocolError(SecganError):
    """A wire message failed validation. One opaque class for every decoding failure.

    ``code`` is a short machine-readable reason (e.g. ``bad_frame_count``, ``replay``), safe to log
    and to send back to the peer.
    """

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        # the refused message was itself an error report (its header says ErrorReply): a receiver
        # never answers it with another error, or two peers that cannot read each other (another
        # protocol version, say) would trade error replies for ever
        self.about_an_error = False


class CryptoError(SecganError):
    """A signature, key or decryption check failed. Deliberately uninformative."""


class PrivacyError(SecganError):
    """A privacy invariant would be broken (forbidden combination, ledger mismatch, ...)."""


class BudgetExhausted(PrivacyError):
    """Releasing would take the site past its epsilon budget."""

    def __init__(self, epsilon_after: float, target_epsilon: float) -> None:
        super().__init__(
            f"budget_exhausted: epsilon after this release would be {epsilon_after:.4f} "
            f"> target {target_epsilon:.4f}"
        )
        self.epsilon_after = epsilon_after
        self.target_epsilon = target_epsilon
