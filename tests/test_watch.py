"""Waiting for a change: ``poll()`` on the mount's files and ``imdsfs wait``, on a real mount.

The emulator's scenarios change values the way the field does (credentials rotate and change
length, a spot notice appears where there was a 404); the waiters are real processes or
threads blocked in the kernel's poll().
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from imdsfs import MetadataCache, TtlPolicy
from imdsfs._watch import MAX_NEW_PER_SECOND, MAX_WATCHED, Watches
from imdsfs.emulator import Emulator, GceEmulator

from .conftest import MakeClient, MakeEmulator, Mounted

ROLE = "iam/security-credentials/imdsfs-demo-role"
SPOT = "spot/instance-action"
SPOT_URL = "/latest/meta-data/spot/instance-action"


def imdsfs_wait(*args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "imdsfs", "wait", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
    )


def wait_until_waiting(processes: list[subprocess.Popen[bytes]]) -> None:
    """Until each process holds its watch file open (Python's start is slow: 100 take a
    while, and the notice must find them all waiting)."""
    deadline = time.monotonic() + 120
    for process in processes:
        fds = Path(f"/proc/{process.pid}/fd")
        while not any("/.imdsfs/watch/" in _target(fd) for fd in fds.iterdir()):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)


def _target(link: Path) -> str:
    try:
        return os.readlink(link)
    except FileNotFoundError:  # a descriptor closed meanwhile
        return ""


def poll_for_change(fd: int, seconds: float) -> tuple[list[tuple[int, int]], float]:
    """Block in poll(POLLPRI) as a C program would; (events, seconds it took)."""
    poller = select.poll()
    poller.register(fd, select.POLLPRI)
    started = time.monotonic()
    events = poller.poll(int(seconds * 1000))
    return events, time.monotonic() - started


def read_from_start(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- poll() on a file ---------------------------------------------------------------------------


def test_a_poller_is_woken_by_a_rotation_and_reads_the_new_value_after_lseek(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    """The rotated document is longer than the first (so a stale size would truncate it)."""
    mounted = make_mount(emulator)
    fd = os.open(mounted.path / ROLE, os.O_RDONLY)
    try:
        before = read_from_start(fd)
        poller_ready = threading.Event()
        result: list[tuple[list[tuple[int, int]], float]] = []

        def poller() -> None:
            poller_ready.set()
            result.append(poll_for_change(fd, 15.0))

        thread = threading.Thread(target=poller)
        thread.start()
        poller_ready.wait()
        time.sleep(0.3)
        emulator.rotate_credentials()
        rotated_at = time.monotonic()
        expected = emulator.get_bytes(f"meta-data/{ROLE}")
        thread.join()
        (events, _), woken_after = result[0], time.monotonic() - rotated_at
        assert events, "not woken"
        assert events[0][1] & select.POLLPRI
        assert woken_after <= 5 + 1  # the credentials' TTL, plus a second
        after = read_from_start(fd)
        assert after == expected != before
    finally:
        os.close(fd)


def test_gce_change_feed_wakes_a_poller_at_once_whatever_the_ttl(
    make_mount: Callable[..., Mounted], gce_emulator: GceEmulator
) -> None:
    """GCE reports changes itself: a poller is woken by the news, not by a refresh a TTL
    later, even when the news came between its open and its poll (the feed makes the value
    stale without knowing it: the poll then asks for it)."""
    mounted = make_mount(gce_emulator, "--provider", "gce", "--ttl", "instance/**=60")
    fd = os.open(mounted.path / "instance" / "preempted", os.O_RDONLY)
    try:
        assert read_from_start(fd) == b"FALSE"
        gce_emulator.schedule_preemption(after=0.0)
        gce_emulator.get_bytes("instance/preempted")  # apply it now, on the emulator's clock
        time.sleep(0.5)  # the news arrives before the poll: it must not be missed
        events, took = poll_for_change(fd, 10.0)
        assert events, "not woken"
        assert events[0][1] & select.POLLPRI
        assert took <= 2
        assert read_from_start(fd) == b"TRUE"
    finally:
        os.close(fd)


def test_while_gces_change_feed_fails_a_watched_path_is_asked_for_per_ttl(
    make_mount: Callable[..., Mounted], gce_emulator: GceEmulator
) -> None:
    """A feed that does not answer reports nothing: the poller must not wait for it."""
    gce_emulator.set("instance/attributes/flag", "off")
    mounted = make_mount(gce_emulator, "--provider", "gce", "--ttl", "instance/**=1")
    fd = os.open(mounted.path / "instance" / "attributes" / "flag", os.O_RDONLY)
    try:
        assert read_from_start(fd) == b"off"
        result: list[tuple[list[tuple[int, int]], float]] = []
        poller = threading.Thread(target=lambda: result.append(poll_for_change(fd, 15.0)))
        poller.start()  # polling from before the feed fails
        time.sleep(0.5)  # the feed's first answer is in; its long-poll waits
        gce_emulator.faults.fail_next(1_000_000, status=503, path="/computeMetadata/v1/")
        gce_emulator.set("instance/attributes/noise", "x")  # ends the long-poll; the next fails
        time.sleep(0.5)
        gce_emulator.set("instance/attributes/flag", "on, and longer")
        changed_at = time.monotonic()
        poller.join()
        (events, _), woken_after = result[0], time.monotonic() - changed_at
        assert events, "not woken: the failing feed was trusted"
        assert woken_after <= 1 + 1 + 0.5  # the TTL, and a second
        assert read_from_start(fd) == b"on, and longer"
    finally:
        os.close(fd)


def test_a_spot_notice_wakes_a_poller_of_the_spot_listing_parent_within_its_ttl(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    """A file that does not exist cannot be polled: its watch file can (what `imdsfs wait`
    opens), and reads ENODATA until the notice appears."""
    mounted = make_mount(emulator)
    watch = mounted.path / ".imdsfs" / "watch" / "spot%2Finstance-action"
    fd = os.open(watch, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as raised:
            os.read(fd, 100)
        assert raised.value.errno == 61  # ENODATA: no value (yet)
        emulator.schedule_spot_interruption(after=0.0)
        noticed_at = time.monotonic()
        events, _ = poll_for_change(fd, 10.0)
        assert events, "not woken"
        assert events[0][1] & select.POLLPRI
        assert time.monotonic() - noticed_at <= 5 + 1
        assert read_from_start(fd) == emulator.get_bytes(f"meta-data/{SPOT}")
        # And the file itself shows at once: its listings were asked for again.
        assert (mounted.path / SPOT).read_bytes() == emulator.get_bytes(f"meta-data/{SPOT}")
    finally:
        os.close(fd)


def test_a_file_that_does_not_change_never_wakes_its_poller(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--ttl", "instance-type=1")
    fd = os.open(mounted.path / "instance-type", os.O_RDONLY)
    try:
        events, waited = poll_for_change(fd, 3.5)  # three TTLs and more
        assert events == []
        assert waited >= 3.4
        # It was asked for again each TTL (watched), and found unchanged.
        assert emulator.counters.count(path="/latest/meta-data/instance-type") >= 3
    finally:
        os.close(fd)


def test_a_file_deleted_upstream_wakes_its_poller_with_pollerr(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--ttl", "tags/**=1")
    path = mounted.path / "tags/instance/Name"
    fd = os.open(path, os.O_RDONLY)
    try:
        before = read_from_start(fd)
        emulator.delete("meta-data/tags/instance/Name")
        events, waited = poll_for_change(fd, 5.0)
        assert events, "not woken"
        assert events[0][1] & (select.POLLPRI | select.POLLERR) == select.POLLPRI | select.POLLERR
        assert waited <= 1 + 1
        assert read_from_start(fd) == before  # the last value it had, not a torn one
    finally:
        os.close(fd)


def test_unpolled_files_are_not_refreshed(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--ttl", "instance-type=0.5")
    (mounted.path / "instance-type").read_bytes()
    emulator.counters.reset()
    time.sleep(2.0)
    assert emulator.counters.count(path="/latest/meta-data/instance-type") == 0


def test_a_page_cached_file_tells_a_change_once_and_a_new_open_reads_it(
    make_mount: Callable[..., Mounted], gce_emulator: GceEmulator
) -> None:
    """A value kept for hours (GCE's hostname) is read through the page cache, which answers
    this descriptor's reads without the daemon: the change is told once (not again at every
    poll, a busy loop of FUSE_POLLs), and a new open reads it."""
    mounted = make_mount(gce_emulator, "--provider", "gce")
    path = mounted.path / "instance" / "hostname"
    fd = os.open(path, os.O_RDONLY)
    try:
        read_from_start(fd)
        gce_emulator.set("instance/hostname", "a-longer-host-name-than-before.internal")
        events, _ = poll_for_change(fd, 10.0)
        assert events
        assert events[0][1] & select.POLLPRI
        read_from_start(fd)
        again, _ = poll_for_change(fd, 0.5)
        assert not again, "told again for the same change"
        assert path.read_bytes() == b"a-longer-host-name-than-before.internal"
    finally:
        os.close(fd)


def test_watched_paths_are_capped_and_past_the_cap_a_watch_file_is_enospc(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    # 404s forgotten at once, so reopening a watched path may ask again: the new-name rate
    # must not refuse it (it is watched already). make test from a fresh clone met that.
    mounted = make_mount(emulator, "--ttl", "negative=0.1")
    watch = mounted.path / ".imdsfs" / "watch"
    fds = [open_when_allowed(watch / f"tags%2Finstance%2Fx{i}") for i in range(MAX_WATCHED)]
    try:
        with pytest.raises(OSError) as raised:
            os.open(watch / "tags%2Finstance%2Fone-more", os.O_RDONLY)
        assert raised.value.errno == errno.ENOSPC
        os.close(os.open(watch / "tags%2Finstance%2Fx0", os.O_RDONLY))  # watched already: fine
    finally:
        for fd in fds:
            os.close(fd)
    os.close(open_when_allowed(watch / "tags%2Finstance%2Fone-more"))  # room again


def open_when_allowed(path: Path) -> int:
    """Open a watch file, waiting out the mount's EAGAIN (new paths opened too fast)."""
    while True:
        try:
            return os.open(path, os.O_RDONLY)
        except BlockingIOError:
            time.sleep(0.05)


def test_new_watch_paths_are_asked_for_at_most_10_a_second(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    """Opening and closing watch files of invented names cost a request each: a local user
    must not drive the service's request rate that way."""
    mounted = make_mount(emulator)
    watch = mounted.path / ".imdsfs" / "watch"
    emulator.counters.reset()
    refused = 0
    started = time.monotonic()
    for index in range(40):
        try:
            os.close(os.open(watch / f"tags%2Finstance%2Finvented-{index}", os.O_RDONLY))
        except BlockingIOError:
            refused += 1
    seconds = time.monotonic() - started
    assert refused > 0
    asked = emulator.counters.count(method="GET")
    assert asked <= MAX_NEW_PER_SECOND * (int(seconds) + 1)


def test_a_watch_file_name_no_path_has_is_enoent_and_logs_nothing(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator)
    for _ in range(20):
        with pytest.raises(FileNotFoundError):
            os.stat(os.fsencode(mounted.path / ".imdsfs" / "watch") + b"/\xff")
    assert "Traceback" not in mounted.log()


async def test_a_paths_refresh_task_ends_with_its_last_waiter(
    emulator: Emulator, make_client: MakeClient
) -> None:
    """Not a TTL later: placement's is six hours, and a task per name a user invents and
    drops would pile up that long."""
    client = make_client(emulator)
    cache = MetadataCache(client, TtlPolicy(builtin=client.provider.ttl_rules))
    watches = Watches(cache, refreshed=lambda path: None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watches.run)
        await trio.testing.wait_all_tasks_blocked()
        paths = [f"placement/invented-{index}" for index in range(MAX_WATCHED)]
        for path in paths:
            assert watches.add(path)
        watches.add(paths[0])  # a second waiter: its path stays
        await trio.testing.wait_all_tasks_blocked()
        assert watches.refreshing() == MAX_WATCHED
        assert not watches.add("placement/one-more")  # the cap
        for path in paths:
            watches.discard(path)
        await trio.testing.wait_all_tasks_blocked()
        assert (watches.refreshing(), watches.paths()) == (1, [paths[0]])
        nursery.cancel_scope.cancel()


# -- imdsfs wait --------------------------------------------------------------------------------


def test_wait_returns_the_value_of_a_path_that_appears(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator)
    waiter = imdsfs_wait(str(mounted.path / SPOT), "--timeout", "20")
    time.sleep(1.0)
    assert waiter.poll() is None  # still waiting: no notice
    emulator.schedule_spot_interruption(after=0.0)
    noticed_at = time.monotonic()
    stdout, stderr = waiter.communicate(timeout=20)
    assert waiter.returncode == 0, stderr
    assert time.monotonic() - noticed_at <= 5 + 1 + 0.5  # TTL + 1 s (+ the CLI's exit)
    assert stdout == emulator.get_bytes(f"meta-data/{SPOT}")


def test_wait_for_a_path_that_exists_returns_at_once(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator)
    waiter = imdsfs_wait("instance-id", "--timeout", "5", cwd=mounted.path)
    stdout, _ = waiter.communicate(timeout=10)
    assert (waiter.returncode, stdout) == (0, emulator.get_bytes("meta-data/instance-id"))


def test_wait_changed_returns_the_new_value(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator)
    waiter = imdsfs_wait("--changed", str(mounted.path / ROLE), "--timeout", "20")
    time.sleep(1.0)
    assert waiter.poll() is None  # the value it has now does not count
    emulator.rotate_credentials()
    stdout, stderr = waiter.communicate(timeout=20)
    assert waiter.returncode == 0, stderr
    assert stdout == emulator.get_bytes(f"meta-data/{ROLE}")


def test_wait_times_out_with_status_1_on_time(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator)
    started = time.monotonic()
    waiter = imdsfs_wait(str(mounted.path / SPOT), "--timeout", "1.5")
    stdout, _ = waiter.communicate(timeout=10)
    took = time.monotonic() - started
    assert (waiter.returncode, stdout) == (1, b"")
    assert 1.5 <= took < 4.0  # on time: the interpreter's start is the rest


def test_wait_keeps_waiting_while_the_service_fails_and_returns_once_it_answers(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    """An IMDS blip as a spot watcher starts (at boot, say) must not end its wait."""
    mounted = make_mount(emulator)
    emulator.faults.error_rate = 1.0
    waiter = imdsfs_wait(str(mounted.path / SPOT), "--timeout", "30")
    time.sleep(3.0)
    assert waiter.poll() is None, waiter.communicate()
    emulator.faults.error_rate = 0.0
    emulator.schedule_spot_interruption(after=0.0)
    stdout, stderr = waiter.communicate(timeout=20)
    assert waiter.returncode == 0, stderr
    assert stdout == emulator.get_bytes(f"meta-data/{SPOT}")
    assert b"still waiting" in stderr


def test_wait_exits_2_when_the_mount_goes_away(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    """Not 1 ("timed out"): a script must not take a vanished mount for "no event"."""
    mounted = make_mount(emulator)
    waiter = imdsfs_wait(str(mounted.path / SPOT), "--timeout", "30")
    wait_until_waiting([waiter])
    subprocess.run(["fusermount3", "-u", "-z", str(mounted.path)], check=True)
    _, stderr = waiter.communicate(timeout=10)
    assert waiter.returncode == 2, stderr
    assert b"Traceback" not in stderr


def test_wait_refuses_a_directory_that_only_looks_like_a_mount(tmp_path: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tmp_path)], check=True)
    try:
        (tmp_path / ".imdsfs" / "watch").mkdir(parents=True)
        (tmp_path / ".imdsfs" / "watch" / "spot%2Finstance-action").write_text("FORGED")
        waiter = imdsfs_wait(str(tmp_path / SPOT), "--timeout", "5")
        stdout, stderr = waiter.communicate(timeout=10)
    finally:
        subprocess.run(["umount", str(tmp_path)], check=True)
    assert (waiter.returncode, stdout) == (2, b"")
    assert b"is not in an imdsfs mount" in stderr


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("/tmp/not-a-mount/instance-id", b"is not in an imdsfs mount"),
        ("MOUNT", b"is a directory"),
        ("MOUNT/placement", b"is a directory"),
        ("MOUNT/bad%name", b"not a file path imdsfs can watch"),
    ],
)
def test_wait_refuses_what_it_cannot_wait_for_with_status_2(
    make_mount: Callable[..., Mounted], emulator: Emulator, where: str, message: bytes
) -> None:
    mounted = make_mount(emulator)
    waiter = imdsfs_wait(where.replace("MOUNT", str(mounted.path)), "--timeout", "5")
    _, stderr = waiter.communicate(timeout=10)
    assert waiter.returncode == 2
    assert message in stderr
    assert stderr.count(b"\n") == 1


def test_a_hundred_waiters_cost_what_one_does(
    make_mount: Callable[..., Mounted], make_emulator: MakeEmulator
) -> None:
    """100 `imdsfs wait` processes on one path: one refresh per TTL between them, all woken
    with the same bytes within TTL + 1 s of the notice."""

    def run(waiters: int) -> tuple[set[bytes], int, bytes]:
        emulator = make_emulator()
        mounted = make_mount(emulator)
        processes = [
            imdsfs_wait(str(mounted.path / SPOT), "--timeout", "30") for _ in range(waiters)
        ]
        wait_until_waiting(processes)
        emulator.counters.reset()  # from here on, the same span of time in both runs
        time.sleep(6.0)  # a refresh or more while they wait
        emulator.schedule_spot_interruption(after=0.0)
        noticed_at = time.monotonic()
        outputs = {process.communicate(timeout=30)[0] for process in processes}
        assert time.monotonic() - noticed_at <= 5 + 1 + 3  # the last of 100 to exit, too
        assert all(process.returncode == 0 for process in processes)
        notice = emulator.get_bytes(f"meta-data/{SPOT}")
        return outputs, emulator.counters.count(path=SPOT_URL), notice

    _, one, _ = run(1)
    outputs, hundred, notice = run(100)
    assert outputs == {notice}
    assert hundred <= one + 1  # plus one refresh at most
