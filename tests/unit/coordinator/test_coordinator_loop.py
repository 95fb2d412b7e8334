"""The coordinator's loop is ``step_once(now)`` called until it returns how the run ended: each pass
can be driven on its own, without sockets (a router stand-in, a poller that has nothing to read),
and a whole run is a handful of passes. The loop reads the monotonic clock between its stages, so
the sites here are seen at monotonic time too."""

from __future__ import annotations

import dataclasses
import time

import pytest
from tqdm import tqdm

from secgan.net.schema import FakeBatch, Stop

from coordinator.service import Coordinator
from tests.unit.coordinator.test_coordinator_inbound import Site, make_coordinator


class _IdlePoller:
    def poll(self, timeout_ms):
        return []


def _loop_ready(c: Coordinator) -> Coordinator:
    c._poller, c._bar, c._last_json, c._step_started = _IdlePoller(), tqdm(disable=True), 0.0, 0.0
    return c


@pytest.fixture
def coord(tmp_path) -> Coordinator:
    return _loop_ready(make_coordinator(tmp_path))


def _site(c: Coordinator, name: str = "site-1") -> Site:
    site = Site(c, name)
    site.now = time.monotonic()
    site.hello()
    return site


def test_one_pass_starts_a_round_and_another_closes_it_into_a_step(coord) -> None:
    site = _site(coord)
    assert coord.step_once(time.monotonic()) is None
    batch = coord.router.last(site.rid, FakeBatch)
    assert batch is not None and coord.scheduler.current is not None
    site.reply(batch)
    assert coord.step_once(time.monotonic()) is None  # all answered: the round closes, G steps, the next round starts
    assert coord.scheduler.step == 1 and len(coord.step_seconds) == 1


def test_a_signal_ends_the_run_at_the_next_pass_without_stopping_the_sites(coord) -> None:
    site = _site(coord)
    coord._stop_signal = "SIGTERM"
    assert coord.step_once(time.monotonic()) == ("interrupted", "SIGTERM")
    final = coord._finish("interrupted", "SIGTERM")
    assert final["status"] == "interrupted" and coord.router.last(site.rid, Stop) is None


def test_a_run_of_its_planned_steps_completes_and_stops_every_site(tmp_path) -> None:
    c = make_coordinator(tmp_path)
    conf = c.settings
    c = Coordinator(dataclasses.replace(c.cfg, settings=dataclasses.replace(conf, train=dataclasses.replace(conf.train, steps=2))))
    c.router = type(make_coordinator(tmp_path / "x").router)()
    _loop_ready(c)
    site = _site(c)
    ended = None
    for _ in range(10):
        ended = c.step_once(time.monotonic())
        if ended is not None:
            break
        batch = c.router.last(site.rid, FakeBatch)
        if c.scheduler.current is not None and batch is not None and batch.step == c.scheduler.step:
            site.now = time.monotonic()
            site.reply(batch)
    assert ended == ("completed", "completed")
    assert c._finish(*ended)["steps_done"] == 2 and c.router.last(site.rid, Stop) is not None
