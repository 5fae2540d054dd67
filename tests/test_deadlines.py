"""No file operation outlives ``--deadline`` (+ 0.5 s), however many readers queue for it.

The kernel runs the lookups and readdirs of one directory one at a time (libfuse 3.14 never
negotiates FUSE_PARALLEL_DIROPS), so a reader can wait in the kernel, before imdsfs sees its
request, while earlier readers of the same directory wait on IMDS. These tests time each
reader from its system call, as a user would.
"""

from __future__ import annotations

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
