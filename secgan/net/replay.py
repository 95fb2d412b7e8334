"""Protocol state: drops stale, replayed and implausible messages, per authenticated peer.

Checked after :func:`secgan.net.codec.decode` (wrong_run, future_round, stale, replay, seq_ahead),
by the caller, per authenticated peer; the guard remembers a message only when the caller commits
it after all of its own checks.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Hashable

from secgan.net.errors import fail
from secgan.net.schema import Envelope


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
        raise fail(code)


def initial_seq() -> int:
    """A starting sequence number that grows across process restarts (microseconds since the
    epoch; far below 2^53)."""
    return time.time_ns() // 1000
