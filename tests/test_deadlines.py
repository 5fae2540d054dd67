"""No file operation outlives ``--deadline`` (+ 0.5 s), however many readers queue for it.

The kernel runs the lookups and readdirs of one directory one at a time (libfuse 3.14 never
negotiates FUSE_PARALLEL_DIROPS), so a reader can wait in the kernel, before imdsfs sees its
request, while earlier readers of the same directory wait on IMDS. These tests time each
reader from its system call, as a user would.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imdsfs.emulator import Emulator

from .conftest import Mounted

DEADLINE = 2.0
SLACK = 0.5  # what the issue allows past the deadline


def _timed_reads(paths: list[Path]) -> list[tuple[Path, float, int | None]]:
    """Read every path at once, one thread each: (path, seconds, errno or None)."""
    outcomes: list[tuple[Path, float, int | None]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(paths))

    def read(path: Path) -> None:
        barrier.wait()
        started = time.monotonic()
        error = None
        try:
            path.read_bytes()
        except OSError as exc:
            error = exc.errno
        with lock:
            outcomes.append((path, time.monotonic() - started, error))

    threads = [threading.Thread(target=read, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.parametrize("readers", [3, 16])
def test_readers_queued_in_one_directory_all_finish_within_the_deadline(
    make_mount: Callable[..., Mounted], emulator: Emulator, readers: int
) -> None:
    for n in range(readers):
        emulator.set(f"meta-data/placement/extra-{n}", f"value {n}")
    mounted = make_mount(emulator, "--deadline", str(DEADLINE))
    placement = mounted.path / "placement"
    assert (placement / "region").read_bytes() == emulator.get_bytes("meta-data/placement/region")
    emulator.faults.stall_rate = 1.0  # from now on IMDS answers nothing
    emulator.faults.stall_seconds = 60.0
    outcomes = _timed_reads([placement / f"extra-{n}" for n in range(readers)])
    slowest = max(seconds for _, seconds, _ in outcomes)
    assert slowest < DEADLINE + SLACK, sorted(seconds for _, seconds, _ in outcomes)
    assert {error for _, _, error in outcomes} <= {errno.EIO}
    started = time.monotonic()  # and the value read before the stall is still served at once
    assert (placement / "region").read_bytes() == emulator.get_bytes("meta-data/placement/region")
    assert time.monotonic() - started < 0.2


def test_a_listing_retry_and_a_stalled_child_still_list_every_name(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--deadline", str(DEADLINE))
    # The first listing request stalls until the client's per-attempt timeout; a retry answers.
    emulator.faults.stall_next(1, seconds=60, path="/latest/meta-data/placement/")
    emulator.faults.stall_next(1, seconds=60, path="/latest/meta-data/placement/region")
    started = time.monotonic()
    names = os.listdir(mounted.path / "placement")
    elapsed = time.monotonic() - started
    listing = emulator.get_bytes("meta-data/placement/").decode().split("\n")
    assert sorted(names) == sorted(entry.rstrip("/") for entry in listing)
    assert elapsed < DEADLINE + SLACK


def test_a_cached_value_is_served_at_once_while_imds_stalls(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--deadline", str(DEADLINE))
    region = mounted.path / "placement" / "region"
    expected = region.read_bytes()
    emulator.faults.stall_rate = 1.0
    emulator.faults.stall_seconds = 60.0
    stalled = _timed_reads([mounted.path / "placement" / "availability-zone"] * 1)
    assert stalled[0][2] == errno.EIO
    for _ in range(20):
        started = time.monotonic()
        assert region.read_bytes() == expected
        assert time.monotonic() - started < 0.2


def test_a_path_walk_is_one_system_call_with_one_deadline(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    """Every component of a cold path costs a request: the kernel sends one LOOKUP each."""
    macs = "meta-data/network/interfaces/macs/"
    mac = emulator.get_bytes(macs).decode().split("\n")[0]
    mounted = make_mount(emulator, "--deadline", str(DEADLINE))
    emulator.faults.latency = 0.9  # slow, not gone: each request is answered in time
    deep = mounted.path / "network/interfaces/macs" / mac / "local-ipv4s"
    started = time.monotonic()
    with contextlib.suppress(OSError):
        deep.read_bytes()
    assert time.monotonic() - started < DEADLINE + SLACK


def test_one_reader_going_through_a_directory_is_not_charged_for_its_own_requests(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    for n in range(8):
        emulator.set(f"meta-data/placement/extra-{n}", f"value {n}")
    mounted = make_mount(emulator, "--deadline", str(DEADLINE))
    emulator.faults.latency = 0.4  # nothing cached: each file costs one slow request
    for n in range(8):  # one after the other: nobody queues behind anybody
        assert (mounted.path / f"placement/extra-{n}").read_bytes() == f"value {n}".encode()


def test_a_slow_service_is_still_heard_within_the_deadline(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator)  # the default 5 s deadline
    os.listdir(mounted.path / "placement")  # the root's listing is cached, its values not
    emulator.faults.latency = 1.5  # longer than one attempt's 1 s patience
    assert (mounted.path / "ami-id").read_bytes() == emulator.get_bytes("meta-data/ami-id")


def test_during_a_stall_expired_values_are_served_at_once_after_the_first_wait(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--deadline", str(DEADLINE), "--ttl", "**=0.5")
    role = "iam/security-credentials/" + os.listdir(mounted.path / "iam/security-credentials")[0]
    paths = [mounted.path / "placement/region", mounted.path / role]
    expected = [path.read_bytes() for path in paths]
    emulator.faults.stall_rate = 1.0
    emulator.faults.stall_seconds = 60.0
    time.sleep(1.0)  # everything has expired
    for round_ in range(4):
        for path, value in zip(paths, expected, strict=True):
            started = time.monotonic()
            assert path.read_bytes() == value
            took = time.monotonic() - started
            assert took < DEADLINE + SLACK
            if round_ > 0:
                assert took < 0.5, (round_, path.name, took)


def test_hundreds_of_concurrent_readers_all_finish_within_the_deadline(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--deadline", str(DEADLINE), "--ttl", "**=0.3")
    files = []
    for directory in ("placement", "network/interfaces/macs", "iam", "tags/instance"):
        for name in os.listdir(mounted.path / directory):
            if (mounted.path / directory / name).is_file():
                files.append(mounted.path / directory / name)
    handles = [os.open(path, os.O_RDONLY) for path in files for _ in range(50)][:400]
    try:
        emulator.faults.stall_rate = 1.0
        emulator.faults.stall_seconds = 60.0
        time.sleep(0.5)
        outcomes: list[float] = []
        lock = threading.Lock()

        def getxattr(fd: int) -> None:  # each asks the daemon, past the value's TTL
            started = time.monotonic()
            with contextlib.suppress(OSError):
                os.getxattr(fd, "user.imds.source")
            with lock:
                outcomes.append(time.monotonic() - started)

        threads = [threading.Thread(target=getxattr, args=(fd,)) for fd in handles]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for fd in handles:
            os.close(fd)
    assert len(outcomes) == 400
    assert max(outcomes) < DEADLINE + SLACK, sorted(outcomes)[-5:]
