"""Which inbound message a site may send in which protocol stage (the coordinator's side).

Pure: given the site's state and what is in flight for it, accept or raise
``ProtocolError("unexpected_message")``. Stale replies (an older round) are told apart so they can
be counted as ``stale`` rather than as protocol violations.
"""

from __future__ import annotations

from secgan.core.errors import ProtocolError
from secgan.net.schema import ErrorReply, GradientReply, Heartbeat, Hello, Message, Refusal, SecAggMasked, StopAck

from coordinator.registry import REMOVED, WELCOMED

# What a site may send at all; everything else (Welcome, FakeBatch, SecAggAnnounce, Stop) is
# coordinator -> site.
SITE_MESSAGES = (Hello, GradientReply, SecAggMasked, Refusal, Heartbeat, ErrorReply, StopAck)


def check_stage(
    *,
    state: str,
    msg: Message,
    run_id: str,
    current_round: int | None,
    in_flight: tuple[int, int] | None,
    ended: bool = False,
) -> None:
    """Raise unless ``msg`` fits the site's stage.

    ``in_flight`` is the (round, step) of the batch sent to this site and not yet answered, if any.
    Hello is always allowed (it is how a site (re)joins); ErrorReply is always allowed (it reports a
    problem with something we sent). A Heartbeat from a site without a session (never welcomed,
    declared dead, or welcomed by an earlier incarnation) is answered ``not_welcomed``, which tells
    the site to say Hello again; a reply before Welcome is ``unexpected_message``.

    A StopAck acknowledges a Stop of this run: accepted once the run has ``ended`` (every site is
    told Stop then) or from a removed site (told Stop when it says Hello again), refused otherwise.
    Once the run has ended every other site message is accepted, whatever the site's state: each is
    answered with the final Stop (:mod:`coordinator.final_stop`), none reaches the scheduler.
    """
    if not isinstance(msg, SITE_MESSAGES):
        raise ProtocolError("unexpected_message", f"{type(msg).__name__} is never sent by a site")
    if isinstance(msg, StopAck):
        if not (ended or state == REMOVED):
            raise ProtocolError("unexpected_message", "no Stop was sent to this site")
        if msg.run_id != run_id:
            raise ProtocolError("wrong_run", "acknowledges the Stop of another run")
        return
    if isinstance(msg, (Hello, ErrorReply)) or ended:
        return
    if state not in (WELCOMED, REMOVED):
        if isinstance(msg, Heartbeat):  # a live session the coordinator does not know: re-Hello
            raise ProtocolError("not_welcomed", "say Hello first")
        raise ProtocolError("unexpected_message", f"{type(msg).__name__} before Welcome")
    if isinstance(msg, Heartbeat):
        return
    if msg.run_id != run_id:
        raise ProtocolError("wrong_run", "reply for another run")
    if in_flight is not None and (msg.round, msg.step) == in_flight:
        return
    if current_round is not None and msg.round < current_round:
        raise ProtocolError("stale", f"reply for round {msg.round} < current {current_round}")
    raise ProtocolError("unexpected_message", f"no batch of round {msg.round} step {msg.step} was sent to this site")

