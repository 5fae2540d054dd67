#!/usr/bin/env python3
"""Soak imdsfs: parallel readers walk and read the whole mount while IMDS misbehaves.

The emulator runs in this process (a thread) with fault injection: 10% 500s, connection
resets, 2 s stalls, bursts of 503/429, token revocation every 30 s, IAM credential rotation
every second (each rotation changes the documents' length: the session token's length varies)
and a spot interruption notice half-way. The daemon is ``python -m imdsfs mount
--foreground``; the readers are processes timing every system call they make: some walk
the whole mount, others read the credentials in a tight loop while stat-ing them, which is
what tore rotating credentials before a file's inode named one value.

At the end a summary is printed and these must hold, else the exit status is 1:

- the daemon stayed alive and exited 0 on SIGTERM, without a traceback in its log;
- no wrong bytes: every file read returned one whole value the emulator served for that
  path (a value superseded more than TTL + 1 s earlier is counted as stale, not wrong: the
  last good value stands in while IMDS fails);
- no operation took longer than the deadline plus a margin;
- every error was an errno imdsfs documents;
- the daemon's RSS grew by at most 10% after the warm-up;
- HTTP requests per second (1 s windows) never went above the ceiling.

Usage: ``python scripts/soak.py [--seconds 600] [--readers 16] [--max-rps 250]``
(``make soak``, ``SOAK_SECONDS`` to change the duration).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import multiprocessing
import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imdsfs.emulator import Emulator, Faults
from imdsfs.testing import MountNotReady, MountProcess

DOCUMENTED_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EAGAIN, errno.EIO, errno.EFBIG}
# Short TTLs, so faults hit the reads instead of hiding behind the cache.
DAEMON_ARGS = ("--ttl", "iam/**=0.5", "--ttl", "**=2", "--ttl", "negative=1")
REPORT_EVERY = 1.0  # seconds between a reader's reports
RSS_GROWTH = 0.10
ROTATE_EVERY = 1  # seconds between credential rotations
FRESH = 3.0  # the longest TTL in DAEMON_ARGS + 1 s: a value older is stale (served on error)
HOT_WAYS = ("read", "pread", "sendfile", "probe")  # one process each on the credentials


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


# --- what the emulator served, over time ------------------------------------------------------


def all_leaves(emu: Emulator) -> dict[str, str]:
    """Mount path -> digest of every leaf the emulator serves now."""
    return {path.removeprefix("meta-data/"): digest(body) for path, body in emu.leaves().items()}


class History:
    """Each path's successive values, with the time each became current."""

    def __init__(self) -> None:
        self._values: dict[str, list[tuple[float, str | None]]] = {}

    def record(self, since: float, leaves: dict[str, str]) -> None:
        for path in set(self._values) | set(leaves):
            versions = self._values.setdefault(path, [])
            value = leaves.get(path)
            if not versions or versions[-1][1] != value:
                versions.append((since, value))

    def ever(self, path: str) -> set[str | None]:
        """Every value the path ever had: a read returning anything else is torn."""
        return {value for _, value in self._values.get(path, [])}

    def acceptable(self, path: str, started: float, ended: float) -> set[str | None]:
        """Values a read between *started* and *ended* may return: those current at some
        point in that window, and the one before them (the cache's previous value)."""
        versions = self._values.get(path, [])
        first = max((i for i, (since, _) in enumerate(versions) if since <= started), default=0)
        last = max((i for i, (since, _) in enumerate(versions) if since <= ended), default=0)
        return {value for _, value in versions[max(0, first - 1) : last + 1]}


# --- readers (separate processes) -------------------------------------------------------------


@dataclass
class Report:
    """What one reader saw during one reporting window."""

    started: float
    ended: float = 0.0
    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, int]] = field(default_factory=Counter)
    slowest: dict[str, tuple[float, str]] = field(default_factory=dict)
    reads: Counter[tuple[str, str]] = field(default_factory=Counter)  # (path, digest)


class Reader:
    """Walks the mount and reads every file, timing each system call."""

    def __init__(self, mount: Path, reports: Any) -> None:
        self.mount = mount
        self.reports = reports
        self.report = Report(time.monotonic())

    def timed(self, op: str, path: str, call: Any, *args: Any) -> Any:
        started = time.monotonic()
        try:
            return call(*args)
        except OSError as exc:
            self.report.errors[(op, exc.errno or 0)] += 1
            return None
        finally:
            seconds = time.monotonic() - started
            self.report.ops[op] += 1
            if seconds > self.report.slowest.get(op, (0.0, ""))[0]:
                self.report.slowest[op] = (seconds, path)

    def read_file(self, relative: str) -> None:
        path = self.mount / relative
        if self.timed("stat", relative, os.stat, path) is None:
            return
        fd = self.timed("open", relative, os.open, path, os.O_RDONLY)
        if fd is None:
            return
        chunks: list[bytes] = []
        try:
            while chunk := self.timed("read", relative, os.read, fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
        if chunk is not None:  # read to the end without an error
            self.report.reads[(relative, digest(b"".join(chunks)))] += 1

    def walk(self, relative: str = "") -> None:
        names = self.timed("listdir", relative or "/", os.listdir, self.mount / relative)
        for name in names or []:
            child = f"{relative}/{name}" if relative else name
            if time.monotonic() - self.report.started >= REPORT_EVERY:
                self.send()
            try:
                mode = os.lstat(self.mount / child).st_mode  # kept out of the figures
            except OSError:
                continue
            if stat.S_ISLNK(mode):
                self.timed("readlink", child, os.readlink, self.mount / child)
            elif stat.S_ISDIR(mode):
                self.walk(child)
            else:
                self.read_file(child)

    def send(self) -> None:
        self.report.ended = time.monotonic()
        self.reports.put(self.report)
        self.report = Report(time.monotonic())


def reader_main(mount: str, until: float, reports: Any) -> None:
    reader = Reader(Path(mount), reports)
    while time.monotonic() < until:
        reader.walk()
    reader.send()


def hot_reader_main(mount: str, relative: str, until: float, reports: Any, way: str) -> None:
    """Read one file over and over, as fast as it goes, one *way*: ``read`` (stat, open, read
    to the end), ``pread`` (16 bytes at a time: many reads of one open file), ``sendfile``
    (what ``cp`` and ``shutil.copyfile`` do), or ``probe`` (stat it and list its directory:
    what changes the size the kernel holds for every other reader)."""
    reader = Reader(Path(mount), reports)
    path = Path(mount) / relative
    while time.monotonic() < until:
        if way == "probe":
            reader.timed("stat", relative, os.stat, path)
            reader.timed("listdir", relative, os.listdir, path.parent)
        elif way == "read":
            reader.read_file(relative)
        else:
            data = reader.timed(way, relative, _HOT_WAYS[way], path)
            if data is not None:
                reader.report.reads[(relative, digest(data))] += 1
        if time.monotonic() - reader.report.started >= REPORT_EVERY:
            reader.send()
    reader.send()


def _pread_small(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks, offset = [], 0
        while chunk := os.pread(fd, 16, offset):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _sendfile(path: Path) -> bytes:
    with tempfile.TemporaryFile() as copy:
        with path.open("rb") as source:
            offset = 0
            while sent := os.sendfile(copy.fileno(), source.fileno(), offset, 1 << 20):
                offset += sent
        copy.seek(0)
        return copy.read()


_HOT_WAYS = {"pread": _pread_small, "sendfile": _sendfile}


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Totals:
    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, int]] = field(default_factory=Counter)
    slowest: dict[str, tuple[float, str]] = field(default_factory=dict)
    reads: int = 0
    wrong: list[str] = field(default_factory=list)
    stale: int = 0
    seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, report: Report, history: History) -> None:
        self.ops.update(report.ops)
        self.errors.update(report.errors)
        for op, (seconds, path) in report.slowest.items():
            if seconds > self.slowest.get(op, (0.0, ""))[0]:
                self.slowest[op] = (seconds, path)
        for (path, value), count in report.reads.items():
            self.reads += count
            self.seen.add((path, value))
            if value not in history.ever(path):
                self.wrong.append(f"{path}: {count} read(s) of {value} at {report.ended:.1f}")
            elif value not in history.acceptable(path, report.started - FRESH, report.ended):
                self.stale += count  # older than any TTL + 1 s: only while IMDS fails


class Scenario(threading.Thread):
    """Changes the instance on a schedule and records every value it made current."""

    def __init__(self, emu: Emulator, history: History, seconds: float) -> None:
        super().__init__(daemon=True)
        self.emu, self.history, self.seconds = emu, history, seconds
        self.events: Counter[str] = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        spot_at = started + self.seconds / 2
        tick = 0
        while not self.stop.wait(1.0):
            tick += 1
            if tick % 30 == 0:
                self.emu.revoke_tokens()
                self.events["token revocations"] += 1
            if tick % ROTATE_EVERY == 0:
                self.change("credential rotations", self.emu.rotate_credentials)
            if tick % 15 == 0:
                status = 503 if tick % 30 else 429
                self.emu.faults.throttle_next(40, status=status, retry_after=None)
                self.events[f"{status} bursts"] += 1
            if spot_at and time.monotonic() >= spot_at:
                self.change("spot notices", self.emu.schedule_spot_interruption)
                spot_at = 0.0

    def change(self, event: str, apply: Any) -> None:
        since = time.monotonic()
        apply()
        self.history.record(since, all_leaves(self.emu))  # also applies a scheduled scenario
        self.events[event] += 1


def sample(
    process: subprocess.Popen[bytes], emu: Emulator, until: float
) -> tuple[list[tuple[float, int]], list[int]]:
    """The daemon's RSS as (seconds since start, KiB), and the requests IMDS received in each
    1 s window, every second until *until*."""
    rss: list[tuple[float, int]] = []
    rates: list[int] = []
    started = time.monotonic()
    last = emu.counters.total
    while time.monotonic() < until and process.poll() is None:
        time.sleep(1.0)
        total = emu.counters.total
        rates.append(total - last)
        last = total
        status = Path(f"/proc/{process.pid}/status").read_text()
        kib = int(next(line.split()[1] for line in status.splitlines() if "VmRSS" in line))
        rss.append((time.monotonic() - started, kib))
    return rss, rates


def credentials_path(emu: Emulator) -> str:
    roles = "meta-data/iam/security-credentials/"
    return roles.removeprefix("meta-data/") + emu.get_bytes(roles).decode().split("\n")[0]


def main() -> int:
    args = parse_args()
    faults = Faults(
        error_rate=0.10,
        reset_rate=0.03,
        stall_rate=0.01,
        stall_seconds=2.0,
        include_token=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="imdsfs-soak-"))
    mount = workdir / "mnt"
    mount.mkdir()
    log_path = workdir / "imdsfs.log"
    history = History()
    with Emulator(faults=faults, seed=args.seed) as emu:
        history.record(time.monotonic(), all_leaves(emu))
        daemon_args = ("--provider", "ec2", "--endpoint", emu.url, "--deadline", str(args.deadline))
        daemon_args += DAEMON_ARGS
        try:
            daemon = MountProcess.start(mount, *daemon_args, log_path=log_path).process
        except MountNotReady as exc:
            raise SystemExit(str(exc)) from None
        started = time.monotonic()
        until = started + args.seconds
        scenario = Scenario(emu, history, args.seconds)
        scenario.start()
        context = multiprocessing.get_context("spawn")
        reports = context.Queue()
        readers = [
            context.Process(target=reader_main, args=(str(mount), until, reports))
            for _ in range(args.readers)
        ]
        readers += [
            context.Process(
                target=hot_reader_main,
                args=(str(mount), credentials_path(emu), until, reports, way),
            )
            for way in HOT_WAYS
        ]
        for reader in readers:
            reader.start()
        rss, rates = sample(daemon, emu, until)
        totals = Totals()
        while any(r.is_alive() for r in readers) or not reports.empty():
            try:
                totals.add(reports.get(timeout=0.5), history)
            except queue.Empty:
                if time.monotonic() > until + args.deadline * 4:
                    break
        for reader in readers:
            reader.join(timeout=args.deadline * 2)
        scenario.stop.set()
        alive = daemon.poll() is None
        daemon.send_signal(signal.SIGTERM)
        try:
            status = daemon.wait(timeout=args.deadline * 3)
        except subprocess.TimeoutExpired:
            daemon.kill()
            status = daemon.wait()
        injected = emu.faults.injected()
    daemon_log = log_path.read_text(errors="replace")
    ok = summarize(args, totals, rss, rates, scenario, injected, alive, status, daemon_log)
    if ok and not args.keep_log:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"daemon log kept in {log_path}")
    return 0 if ok else 1


def summarize(
    args: argparse.Namespace,
    totals: Totals,
    rss: list[tuple[float, int]],
    rates: list[int],
    scenario: Scenario,
    injected: dict[str, int],
    alive: bool,
    status: int,
    daemon_log: str,
) -> bool:
    limit = args.deadline + args.margin
    warm = max(10.0, args.seconds * 0.2)
    baseline = max((kib for t, kib in rss if t <= warm), default=0)
    later = max((kib for t, kib in rss if t > warm), default=baseline)
    growth = (later - baseline) / baseline if baseline else 0.0
    slowest = max(totals.slowest.values(), default=(0.0, "-"))
    bad_errnos = {e for (_, e) in totals.errors if e not in DOCUMENTED_ERRNOS}
    spot_seen = any(path == "spot/instance-action" for path, _ in totals.seen)
    credentials = [value for path, value in totals.seen if path.startswith("iam/security-cred")]
    checks = {
        "daemon alive, exit 0, no traceback": alive
        and status == 0
        and "Traceback" not in daemon_log,
        "no wrong bytes": not totals.wrong,
        f"no operation over {limit:.1f} s": slowest[0] <= limit,
        "only documented errnos": not bad_errnos,
        f"RSS growth after warm-up <= {RSS_GROWTH:.0%}": growth <= RSS_GROWTH,
        f"requests/s <= {args.max_rps}": max(rates, default=0) <= args.max_rps,
        "every reader made progress": sum(totals.ops.values()) > args.readers,
    }
    if args.seconds >= 20:
        checks["spot notice read"] = spot_seen
    errors = ", ".join(
        f"{op} {errno.errorcode.get(e, e)} {n}" for (op, e), n in sorted(totals.errors.items())
    )
    rows = [
        ("duration", f"{args.seconds:.0f} s, {args.readers} readers, deadline {args.deadline} s"),
        ("operations", f"{sum(totals.ops.values())} ({_counts(totals.ops)})"),
        (
            "file reads checked",
            f"{totals.reads}, wrong bytes: {len(totals.wrong)}, stale: {totals.stale}",
        ),
        ("credential values", f"{len(credentials)} distinct read (lengths vary per rotation)"),
        ("errors", errors or "none"),
        ("slowest operation", f"{slowest[0]:.2f} s ({slowest[1]})"),
        ("slowest by kind", _slowest(totals.slowest)),
        (
            "daemon RSS",
            f"{baseline / 1024:.1f} MiB at warm-up, {later / 1024:.1f} MiB max "
            f"after ({growth:+.1%})",
        ),
        (
            "HTTP requests/s",
            f"max {max(rates, default=0)}, mean "
            f"{sum(rates) / max(1, len(rates)):.1f} (ceiling {args.max_rps})",
        ),
        ("faults injected", _counts(Counter(injected))),
        ("instance changes", _counts(scenario.events)),
        ("daemon warnings", str(daemon_log.count(" WARNING "))),
        ("daemon exit", f"{status} (alive at the end: {alive})"),
    ]
    print("\nimdsfs soak summary")
    for name, value in rows:
        print(f"  {name:<20} {value}")
    for name, passed in checks.items():
        print(f"  {'PASS' if passed else 'FAIL'}  {name}")
    for line in totals.wrong[:20]:
        print(f"  wrong: {line}")
    if bad_errnos:
        print(f"  undocumented errnos: {sorted(errno.errorcode.get(e, e) for e in bad_errnos)}")
    print(f"  result: {'PASS' if all(checks.values()) else 'FAIL'}")
    return all(checks.values())


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counter.items())) or "none"


def _slowest(slowest: dict[str, tuple[float, str]]) -> str:
    return ", ".join(f"{op} {seconds:.2f}" for op, (seconds, _) in sorted(slowest.items()))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long (default 600)")
    parser.add_argument("--readers", type=int, default=16, help="reader processes (16)")
    parser.add_argument("--deadline", type=float, default=5.0, help="imdsfs --deadline (5)")
    parser.add_argument("--margin", type=float, default=0.5, help="allowed over it (0.5 s)")
    parser.add_argument("--max-rps", type=int, default=250, help="request/s ceiling (250)")
    parser.add_argument("--seed", type=int, default=6, help="emulator fault sequence seed")
    parser.add_argument("--keep-log", action="store_true", help="keep the daemon log if it passes")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
