"""``wait_for_change`` on the GCE emulator: when a long-poll returns, with what, and that many
of them at once neither starve other requests nor outlive ``stop()``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest

from imdsfs.emulator import GceEmulator, ManualClock

from ..conftest import MakeGceEmulator, gce_request

WAKE = 0.2  # a change must end a long-poll within this


class Poll:
    """One long-poll on a thread of its own: its response (or error) and when it came."""

    def __init__(self, emu: GceEmulator, path: str, timeout: float = 30.0) -> None:
        self.response: httpx.Response | None = None
        self.error: Exception | None = None
        self.finished_at = 0.0
        self._thread = threading.Thread(target=self._run, args=(emu, path, timeout), daemon=True)
        self._thread.start()

    def _run(self, emu: GceEmulator, path: str, timeout: float) -> None:
        try:
            self.response = gce_request(emu, path, timeout=timeout)
        except httpx.HTTPError as error:
            self.error = error
        self.finished_at = time.monotonic()

    def join(self, timeout: float = 10.0) -> httpx.Response:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the long-poll did not return"
        assert self.response is not None, self.error
        return self.response

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


def etag_of(emu: GceEmulator, path: str) -> str:
    return gce_request(emu, path).headers["ETag"]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def held(emu: GceEmulator, n: int = 1) -> None:
    """Wait until ``n`` requests have arrived and are still unanswered."""
    wait_until(lambda: emu.counters.count() - emu.counters.count(status=200) >= n)
    time.sleep(0.05)  # past the first check of the value


def test_a_different_last_etag_returns_at_once(gce_emulator: GceEmulator) -> None:
    started = time.monotonic()
    for etag in ("0000000000000000", "NONE"):
        response = gce_request(gce_emulator, f"instance/tags?wait_for_change=true&last_etag={etag}")
        assert response.status_code == 200
        assert response.content == gce_emulator.get_bytes("instance/tags")
        assert response.headers["ETag"] == etag_of(gce_emulator, "instance/tags")
    assert time.monotonic() - started < 1.0


def test_a_change_wakes_the_long_poll_with_the_new_value(gce_emulator: GceEmulator) -> None:
    etag = etag_of(gce_emulator, "instance/tags")
    poll = Poll(gce_emulator, f"instance/tags?wait_for_change=true&last_etag={etag}")
    held(gce_emulator)
    assert not poll.done
    changed_at = time.monotonic()
    gce_emulator.set("instance/tags", ["http-server", "https-server", "db"])
    response = poll.join()
    assert poll.finished_at - changed_at < WAKE
    assert response.content == b'["http-server","https-server","db"]'
    assert response.headers["ETag"] != etag
    assert response.headers["ETag"] == etag_of(gce_emulator, "instance/tags")


def test_without_last_etag_it_waits_for_the_next_change(gce_emulator: GceEmulator) -> None:
    poll = Poll(gce_emulator, "instance/attributes/enable-oslogin?wait_for_change=true")
    held(gce_emulator)
    assert not poll.done
    gce_emulator.set("instance/attributes/enable-oslogin", "TRUE")
    assert poll.join().content == b"TRUE"


def test_the_timeout_answers_the_unchanged_value(gce_emulator: GceEmulator) -> None:
    etag = etag_of(gce_emulator, "instance/maintenance-event")
    started = time.monotonic()
    response = gce_request(
        gce_emulator,
        f"instance/maintenance-event?wait_for_change=true&last_etag={etag}&timeout_sec=1",
    )
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 1.0 + WAKE + 0.3
    assert (response.status_code, response.content) == (200, b"NONE")
    assert response.headers["ETag"] == etag


def test_a_change_elsewhere_does_not_end_the_wait(gce_emulator: GceEmulator) -> None:
    etag = etag_of(gce_emulator, "instance/attributes/ssh-keys")
    poll = Poll(
        gce_emulator,
        f"instance/attributes/ssh-keys?wait_for_change=true&last_etag={etag}&timeout_sec=1",
    )
    held(gce_emulator)
    gce_emulator.set("instance/attributes/other", "x")
    time.sleep(0.3)
    assert not poll.done
    assert poll.join().headers["ETag"] == etag


def test_a_recursive_wait_watches_the_whole_subtree(gce_emulator: GceEmulator) -> None:
    path = "instance/attributes/?recursive=true"
    etag = etag_of(gce_emulator, path)
    poll = Poll(gce_emulator, f"{path}&wait_for_change=true&last_etag={etag}")
    held(gce_emulator)
    gce_emulator.set("instance/attributes/startup-script", "#!/bin/sh\ntrue\n")
    response = poll.join()
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["startup-script"] == "#!/bin/sh\ntrue\n"


def test_a_scheduled_preemption_wakes_a_watcher(make_gce_emulator: MakeGceEmulator) -> None:
    clock = ManualClock()
    emu = make_gce_emulator(clock=clock)
    emu.schedule_preemption(after=60)
    etag = etag_of(emu, "instance/preempted")
    poll = Poll(emu, f"instance/preempted?wait_for_change=true&last_etag={etag}")
    held(emu)
    advanced_at = time.monotonic()
    clock.advance(60)  # no request follows: the waiter itself notices the scenario is due
    response = poll.join()
    assert poll.finished_at - advanced_at < WAKE
    assert response.content == b"TRUE"


def test_a_deleted_value_ends_the_wait_with_404(gce_emulator: GceEmulator) -> None:
    etag = etag_of(gce_emulator, "instance/description")
    poll = Poll(gce_emulator, f"instance/description?wait_for_change=true&last_etag={etag}")
    held(gce_emulator)
    gce_emulator.delete("instance/description")
    assert poll.join().status_code == 404


def test_timeout_sec_must_be_a_whole_number(gce_emulator: GceEmulator) -> None:
    response = gce_request(gce_emulator, "instance/id?wait_for_change=true&timeout_sec=1.5")
    assert response.status_code == 400


def test_stop_ends_long_polls_at_once(make_gce_emulator: MakeGceEmulator) -> None:
    emu = make_gce_emulator()
    polls = [Poll(emu, "instance/id?wait_for_change=true") for _ in range(3)]
    held(emu, 3)
    started = time.monotonic()
    emu.stop()
    for poll in polls:
        poll._thread.join(5)
        assert poll.done
        assert isinstance(poll.error, httpx.TransportError)  # closed, no answer
    assert time.monotonic() - started < 1.0
    assert emu.counters.count(status=0) == 3


@pytest.mark.parametrize("waiters", [50])
def test_many_long_polls_leave_room_for_other_requests(
    gce_emulator: GceEmulator, waiters: int
) -> None:
    etag = etag_of(gce_emulator, "instance/maintenance-event")
    path = f"instance/maintenance-event?wait_for_change=true&last_etag={etag}&timeout_sec=60"
    polls = [Poll(gce_emulator, path) for _ in range(waiters)]
    held(gce_emulator, waiters)
    started = time.monotonic()
    for _ in range(20):
        assert gce_request(gce_emulator, "instance/id", timeout=2).status_code == 200
    assert time.monotonic() - started < 3.0
    assert not any(poll.done for poll in polls)
    changed_at = time.monotonic()
    gce_emulator.schedule_maintenance_event()  # due now: the waiters apply it themselves
    for poll in polls:
        assert poll.join().content == b"MIGRATE_ON_HOST_MAINTENANCE"
    assert max(poll.finished_at for poll in polls) - changed_at < 1.0
