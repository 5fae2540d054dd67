"""Exact bytes while values change: many readers, values that change length, never a torn read.

The kernel keeps one size and one page cache per inode, shared by every reader, and changes
them on any lookup, getattr or readdirplus. These tests make a value change (and change
length) on every fetch while readers read it through every path the kernel offers (read,
pread, sendfile, mmap) and others stat and list its directory, and then check every result
against the values the emulator served.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from imdsfs.emulator import Emulator

from .conftest import Mounted

LONG = b"L" * 60 + b"-this-value-is-one-hundred-bytes-long-" + b"!!"  # 100 bytes
SHORT = b"S" * 30 + b"-short."  # 37 bytes
assert (len(LONG), len(SHORT)) == (100, 37)


def _readers(path: Path, scratch: Path) -> dict[str, Callable[[], bytes]]:
    """Every way a program reads a file, each returning what it got."""

    def read_all() -> bytes:
        return path.read_bytes()

    def pread_loop() -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            chunks, offset = [], 0
            while chunk := os.pread(fd, 16, offset):  # small reads: prefixes at offsets
                chunks.append(chunk)
                offset += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def sendfile_copy() -> bytes:
        target = scratch / f"copy-{threading.get_ident()}"
        shutil.copyfile(path, target)  # os.sendfile: bounded by the kernel's size
        return target.read_bytes()

    def mapped() -> bytes:
        """A private mapping: a file whose value changes is read without the page cache
        (so that a poller sees its new value), and the kernel maps such a file only
        privately; MAP_SHARED is refused with ENODEV (see the README)."""
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size == 0:
                return b""
            flags = mmap.MAP_PRIVATE
            with mmap.mmap(file.fileno(), 0, flags=flags, prot=mmap.PROT_READ) as view:
                return bytes(view[:size])

    return {
        "read": read_all,
        "pread": pread_loop,
        "sendfile": sendfile_copy,
        "mmap": mapped,
    }


def _hammer(
    readers: dict[str, Callable[[], bytes]],
    probes: list[Callable[[], object]],
    seconds: float,
    threads_per_reader: int = 2,
) -> tuple[Counter[tuple[str, bytes]], Counter[str]]:
    """Run every reader and probe in threads for *seconds*; (every result, errors by kind)."""
    results: Counter[tuple[str, bytes]] = Counter()
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def loop(name: str, read: Callable[[], bytes]) -> None:
        while time.monotonic() < stop:
            try:
                data = read()
            except OSError as exc:
                with lock:
                    errors[f"{name}: {exc.strerror}"] += 1
                continue
            with lock:
                results[(name, data)] += 1

    def probe(fn: Callable[[], object]) -> None:
        while time.monotonic() < stop:
            with contextlib.suppress(OSError):
                fn()

    threads = [
        threading.Thread(target=loop, args=(name, read))
        for name, read in readers.items()
        for _ in range(threads_per_reader)
    ]
    threads += [threading.Thread(target=probe, args=(fn,)) for fn in probes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def _wrong(results: Counter[tuple[str, bytes]], served: set[bytes]) -> dict[str, list[bytes]]:
    wrong: dict[str, list[bytes]] = {}
    for (name, data), _count in results.items():
        if data not in served:
            wrong.setdefault(name, []).append(data)
    return wrong


def test_concurrent_readers_only_ever_see_whole_values_while_one_changes_length(
    make_mount: Callable[..., Mounted], emulator: Emulator, tmp_path: Path
) -> None:
    emulator.alternate("meta-data/victim", [LONG, SHORT])
    mounted = make_mount(emulator, "--ttl", "victim=0.2")
    path = mounted.path / "victim"
    probes: list[Callable[[], object]] = [
        lambda: os.stat(path),  # lookups and getattrs report the newest size
        lambda: os.listdir(mounted.path),  # readdirplus too
        lambda: [p.stat() for p in mounted.path.iterdir() if p.name == "victim"],
    ]
    results, errors = _hammer(_readers(path, tmp_path), probes, seconds=4.0)
    assert _wrong(results, {LONG, SHORT}) == {}
    assert not errors, errors
    for name in ("read", "pread", "sendfile", "mmap"):  # every way of reading was exercised
        assert sum(n for (kind, _), n in results.items() if kind == name) > 10, name
    assert {data for _, data in results} == {LONG, SHORT}  # and saw the value change


def test_rotating_credentials_are_never_torn(
    make_mount: Callable[..., Mounted], emulator: Emulator, tmp_path: Path
) -> None:
    """Rotation changes the document's length (the session token's length varies)."""
    role = "meta-data/iam/security-credentials/" + emulator.get_bytes(
        "meta-data/iam/security-credentials/"
    ).decode().split("\n")[0].rstrip("/")
    mounted = make_mount(emulator, "--ttl", "iam/**=0.3")
    path = mounted.path / role.removeprefix("meta-data/")
    served: set[bytes] = {emulator.get_bytes(role)}
    stop = threading.Event()

    def rotate() -> None:
        while not stop.wait(0.15):
            emulator.rotate_credentials()
            served.add(emulator.get_bytes(role))

    rotator = threading.Thread(target=rotate)
    rotator.start()
    try:
        results, errors = _hammer(
            _readers(path, tmp_path),
            [lambda: os.stat(path), lambda: os.listdir(path.parent)],
            seconds=4.0,
        )
    finally:
        stop.set()
        rotator.join()
    assert len({len(value) for value in served}) > 3  # the lengths really changed
    assert _wrong(results, served) == {}
    assert not errors, errors


def test_no_value_is_served_longer_than_its_ttl_plus_one_second(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    """Each value is replaced by one of the same length (the page cache's favourite trap);
    a read that returns a value superseded more than TTL + 1 s earlier is stale."""
    ttl = 1.0
    emulator.set("meta-data/victim", b"value-000")
    mounted = make_mount(emulator, "--ttl", f"victim={ttl}")
    path = mounted.path / "victim"
    superseded: dict[bytes, float] = {}
    stop = threading.Event()

    def change() -> None:
        for n in range(1, 1000):
            if stop.wait(0.4):
                return
            old = emulator.get_bytes("meta-data/victim")
            emulator.set("meta-data/victim", f"value-{n:03d}".encode())
            superseded[old] = time.monotonic()

    changer = threading.Thread(target=change)
    changer.start()
    late: list[tuple[bytes, float]] = []
    try:
        results, _ = _hammer(
            {"read": lambda: _timed(path, superseded, ttl, late)},
            [lambda: os.stat(path), lambda: os.listdir(mounted.path)],
            seconds=5.0,
        )
    finally:
        stop.set()
        changer.join()
    assert sum(results.values()) > 100
    assert late == []


def _timed(
    path: Path, superseded: dict[bytes, float], ttl: float, late: list[tuple[bytes, float]]
) -> bytes:
    started = time.monotonic()
    data = path.read_bytes()
    replaced_at = superseded.get(data)
    if replaced_at is not None and started > replaced_at + ttl + 1.0:
        late.append((data, started - replaced_at))
    return data


def test_only_values_that_last_are_mapped_shared(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    """instance-id is page-cached (it lasts); credentials are read directly, so a shared
    mapping of them is refused with ENODEV, a private one works."""
    mounted = make_mount(emulator)
    with (
        (mounted.path / "instance-id").open("rb") as file,
        mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as view,
    ):
        assert bytes(view) == emulator.get_bytes("meta-data/instance-id")
    role = mounted.path / "iam/security-credentials/imdsfs-demo-role"
    with role.open("rb") as file:
        with pytest.raises(OSError) as refused:
            mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ)
        assert refused.value.errno == errno.ENODEV
        flags = mmap.MAP_PRIVATE
        with mmap.mmap(file.fileno(), 0, flags=flags, prot=mmap.PROT_READ) as view:
            assert bytes(view) == role.read_bytes()
