"""``secgan site-host``: several site nodes in one process, each its own CURVE keys, DEALER, state
lock and learner. One node's failure (an exception in its learner, a bad frame) does not end the
others; a second host on a state folder already held is refused for that site."""

from __future__ import annotations

import threading

import pytest

from tests.integration.net_helpers import (
    free_port,
    make_kit,
    site_host_proc,
    stand_in_coordinator,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _hellos_from(router, limits, seen: dict[str, int], timeout_ms: int = 100) -> None:
    """Receive what the router holds; count the Hellos per claimed site, answer nothing."""
    import zmq

    from secgan.core.errors import ProtocolError
    from secgan.net import codec

    while router.poll(timeout_ms):
        frames = router.recv_multipart(flags=zmq.NOBLOCK)
        try:
            env, _msg = codec.decode(frames[1:], limits=limits)
        except ProtocolError:
            continue
        seen[f"{env.site}:{env.type}"] = seen.get(f"{env.site}:{env.type}", 0) + 1
        seen[f"rid:{env.site}"] = frames[0]  # type: ignore[assignment]


def test_one_failing_node_stops_alone_and_a_second_host_is_refused(tmp_path, phantom_root):
    from secgan.net.limits import WireLimits
    from secgan.privacy.statelock import StateLock
    from secgan.settings import load_site_config

    from sites.host import SiteHost, open_sites

    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=2, port=port)
    limits = WireLimits()
    opened, refused = open_sites([load_site_config(kit["site-1"]), load_site_config(kit["site-2"])])
    assert refused == {} and [n.settings.site_id for n, _ in opened] == ["site-1", "site-2"]
    (node1, _), (node2, _) = opened

    def broken_epsilon() -> float:
        raise RuntimeError("learner defect")

    host = SiteHost(opened)
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", host.serve(install_signals=False)), daemon=True)
    with stand_in_coordinator(tmp_path / "kit", port, limits) as router:
        seen: dict = {}
        thread.start()
        wait_until(lambda: (_hellos_from(router, limits, seen), seen.get("site-1:hello") and seen.get("site-2:hello"))[1],
                   timeout=60, what="a Hello from both hosted sites")
        # an exception in site-1's learner, outside any message: the host stops site-1 alone
        node1.learner.epsilon = broken_epsilon
        wait_until(lambda: node1.exit_reason is not None, timeout=30, what="site-1 to stop")
        assert node1.exit_reason == "failed:RuntimeError" and node1.exit_code == 1
        wait_until(lambda: host.codes.get("site-1") == 1, timeout=30, what="site-1 to be ended by the host")
        # ... its lock is released (its state can be opened again), and site-2 keeps serving
        StateLock.acquire(tmp_path / "kit" / "site-1" / "state").release()
        before = seen.get("site-2:hello", 0)
        wait_until(lambda: (_hellos_from(router, limits, seen), seen.get("site-2:hello", 0) >= before + 2)[1],
                   timeout=30, what="site-2 to keep saying Hello")
        assert node2.exit_reason is None and thread.is_alive()
        # a bad frame to site-2 is answered with an ErrorReply; site-2 keeps going
        router.send_multipart([seen["rid:site-2"], b"not a header"])
        wait_until(lambda: (_hellos_from(router, limits, seen), seen.get("site-2:error", 0) >= 1)[1],
                   timeout=30, what="site-2's ErrorReply to a bad frame")
        assert any(k.startswith("rejected_") for k in node2.counts) and node2.exit_reason is None
        # a second host process on site-2's state folder (held by this host) is refused for site-2
        second = site_host_proc(kit, ["site-2"], tmp_path / "logs" / "second.log", "--log-json")
        try:
            assert second.wait(timeout=120) == 2, second.tail()
            refused_ev = second.events("site_refused", site="site-2")
            assert refused_ev and "in use by another process" in refused_ev[0]["reason"], second.tail()
        finally:
            second.close()
        assert node2.exit_reason is None
        host._signal = "SIGTERM"  # what the host's signal handler sets
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert node2.exit_reason == "signal:SIGTERM" and host.codes == {"site-1": 1, "site-2": 0}
    assert result["rc"] == 1  # the largest exit code: a node failed
    StateLock.acquire(tmp_path / "kit" / "site-2" / "state").release()
