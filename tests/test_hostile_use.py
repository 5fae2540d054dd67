"""Hostile use of a healthy mount: writes of every kind, odd offsets, thousands of handles,
readers killed mid-request, and unmounting under blocked readers.

Every test ends with the daemon's log checked for tracebacks and its exit status for 0
(``make_mount``'s teardown), so a crash anywhere fails the test that caused it.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imdsfs.emulator import Emulator

from .conftest import Mounted

DEADLINE = 2.0
MARGIN = 1.0  # hang guard, not a performance target

MakeMount = Callable[..., Mounted]


def imds_bytes(emulator: Emulator, mount_path: str) -> bytes:
    return emulator.get_bytes(f"meta-data/{mount_path}")


def wait_for_request(emulator: Emulator, path: str, timeout: float = 5.0) -> None:
    """Until the emulator has received a request for *path*: the reader is now blocked."""
    deadline = time.monotonic() + timeout
    while emulator.counters.count(path=path) == 0:
        assert time.monotonic() < deadline, f"no request for {path}"
        time.sleep(0.01)


def daemon_rss_kib(mounted: Mounted) -> int:
    status = Path(f"/proc/{mounted.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


# --- nothing changes --------------------------------------------------------------------------

CHANGES: dict[str, Callable[[Path], object]] = {
    "open-w": lambda p: open(p / "instance-id", "w"),  # noqa: SIM115
    "open-a": lambda p: open(p / "instance-id", "a"),  # noqa: SIM115
    "open-r+": lambda p: open(p / "instance-id", "r+b"),  # noqa: SIM115
    "O_WRONLY": lambda p: os.open(p / "instance-id", os.O_WRONLY),
    "O_RDWR": lambda p: os.open(p / "instance-id", os.O_RDWR),
    "O_RDONLY|O_TRUNC": lambda p: os.open(p / "instance-id", os.O_RDONLY | os.O_TRUNC),
    "create": lambda p: open(p / "new-file", "x"),  # noqa: SIM115
    "create-in-subdir": lambda p: os.open(p / "placement/new", os.O_CREAT | os.O_WRONLY),
    "mkdir": lambda p: os.mkdir(p / "newdir"),
    "rmdir": lambda p: os.rmdir(p / "placement"),
    "unlink": lambda p: os.unlink(p / "instance-id"),
    "rename": lambda p: os.rename(p / "instance-id", p / "renamed"),
    "rename-dir": lambda p: os.rename(p / "placement", p / "moved"),
    "link": lambda p: os.link(p / "instance-id", p / "hardlink"),
    "symlink": lambda p: os.symlink("instance-id", p / "link"),
    "mknod-fifo": lambda p: os.mknod(p / "fifo", 0o600 | stat.S_IFIFO),
    "chmod": lambda p: os.chmod(p / "instance-id", 0o777),
    "chmod-secret": lambda p: os.chmod(p / "user-data", 0o444),
    "chown": lambda p: os.chown(p / "instance-id", 65534, 65534),
    "utime": lambda p: os.utime(p / "instance-id", (0, 0)),
    "truncate": lambda p: os.truncate(p / "instance-id", 0),
    "setxattr": lambda p: os.setxattr(p / "instance-id", "user.x", b"1"),
    "removexattr": lambda p: os.removexattr(p / "instance-id", "user.x"),
}


@pytest.fixture
def mounted_fast(make_mount: MakeMount, emulator: Emulator) -> Mounted:
    return make_mount(emulator, "--deadline", str(DEADLINE))


def test_every_change_is_erofs_and_nothing_changed(
    mounted_fast: Mounted, emulator: Emulator
) -> None:
    before = sorted(os.listdir(mounted_fast.path))
    outcomes: dict[str, int | None] = {}
    for name, change in CHANGES.items():  # one mount for all: each case costs a syscall
        try:
            change(mounted_fast.path)
            outcomes[name] = None
        except OSError as exc:
            outcomes[name] = exc.errno
    assert outcomes == dict.fromkeys(CHANGES, errno.EROFS)
    assert sorted(os.listdir(mounted_fast.path)) == before
    st = (mounted_fast.path / "instance-id").stat()
    assert stat.S_IMODE(st.st_mode) == 0o444
    assert (mounted_fast.path / "instance-id").read_bytes() == imds_bytes(emulator, "instance-id")


# --- offsets and handles ----------------------------------------------------------------------


def test_reads_at_and_past_the_end_return_nothing(
    mounted_fast: Mounted, emulator: Emulator
) -> None:
    value = imds_bytes(emulator, "instance-id")
    fd = os.open(mounted_fast.path / "instance-id", os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == value
        assert os.pread(fd, 4096, len(value) - 1) == value[-1:]
        for offset in (len(value), 1 << 20, 1 << 40, 1 << 62):
            assert os.pread(fd, 4096, offset) == b"", offset
        os.lseek(fd, 1 << 62, os.SEEK_SET)
        assert os.read(fd, 4096) == b""
        # Where offset + size would overflow, the kernel refuses before imdsfs is asked.
        with pytest.raises(OSError) as raised:
            os.pread(fd, 4096, (1 << 63) - 1)
        assert raised.value.errno == errno.EINVAL
    finally:
        os.close(fd)


@pytest.fixture
def many_fds() -> Iterator[int]:
    """The soft limit on open files, raised as far as the hard limit allows (<= 20000)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 20000) if hard != resource.RLIM_INFINITY else 20000
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield max(soft, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_thousands_of_open_handles(
    mounted_fast: Mounted, emulator: Emulator, many_fds: int
) -> None:
    paths = ["instance-id", "ami-id", "placement/region", "local-ipv4", "mac", "hostname"]
    expected = {path: imds_bytes(emulator, path) for path in paths}
    count = min(5000, many_fds - 200)
    rss_before = daemon_rss_kib(mounted_fast)
    fds: list[tuple[int, str]] = []
    try:
        for index in range(count):
            path = paths[index % len(paths)]
            fds.append((os.open(mounted_fast.path / path, os.O_RDONLY), path))
        for fd, path in fds:  # every handle still reads its value while all are open
            assert os.pread(fd, 4096, 0) == expected[path]
    finally:
        for fd, _ in fds:
            os.close(fd)
    assert len(fds) == count
    assert (mounted_fast.path / "instance-id").read_bytes() == expected["instance-id"]
    # Handles hold references to cached values, not copies: no per-handle growth to speak of.
    assert daemon_rss_kib(mounted_fast) - rss_before < 20 * 1024


# --- readers that die, and unmounts under blocked readers -------------------------------------

READ_SLOWLY = """
import sys, time
with open(sys.argv[1], "rb", buffering=0) as f:
    f.read(4096)
    print("started", flush=True)
    while f.read(4096):
        time.sleep(0.01)
"""


def test_a_reader_killed_mid_read_leaves_the_mount_healthy(
    mounted_fast: Mounted, emulator: Emulator
) -> None:
    value = os.urandom(1 << 20)  # the largest value imdsfs accepts, so reading takes a while
    emulator.set("meta-data/tags/instance/big", value)
    path = mounted_fast.path / "tags/instance/big"
    reader = subprocess.Popen(
        [sys.executable, "-c", READ_SLOWLY, str(path)], stdout=subprocess.PIPE
    )
    assert reader.stdout is not None
    assert reader.stdout.readline() == b"started\n"
    reader.kill()
    assert reader.wait(timeout=5) == -signal.SIGKILL
    reader.stdout.close()
    assert path.read_bytes() == value


def test_a_reader_killed_while_blocked_dies_within_the_deadline(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--deadline", str(DEADLINE), "--ttl", "**=0.2")
    region = mounted.path / "placement/region"
    assert region.read_bytes() == imds_bytes(emulator, "placement/region")
    time.sleep(0.3)  # expired: the next read asks IMDS, which stalls
    wire = "/latest/meta-data/placement/region"
    emulator.counters.reset()
    emulator.faults.stall_next(1, seconds=30, path=wire)
    reader = subprocess.Popen(["cat", str(region)])
    wait_for_request(emulator, wire)
    started = time.monotonic()
    reader.kill()
    # The kernel lets a request already handed to the daemon finish first (pyfuse3 does not
    # handle FUSE interrupts), so the deadline bounds how long a killed reader lingers.
    assert reader.wait(timeout=DEADLINE + MARGIN) == -signal.SIGKILL
    assert time.monotonic() - started < DEADLINE + MARGIN
    # The mount is healthy: the last good value while IMDS is held off, then a fresh one.
    assert region.read_bytes() == imds_bytes(emulator, "placement/region")
    assert (mounted.path / "ami-id").read_bytes() == imds_bytes(emulator, "ami-id")


def blocked_readers(mounted: Mounted, emulator: Emulator) -> list[subprocess.Popen[bytes]]:
    """Three ``cat``s waiting on IMDS paths that stall, in different directories."""
    paths = ["placement/availability-zone", "services/domain", "hibernation/configured"]
    for path in paths:
        emulator.faults.stall_next(100, seconds=30, path=f"/latest/meta-data/{path}")
    readers = [
        subprocess.Popen(
            ["cat", str(mounted.path / path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for path in paths
    ]
    for path in paths:
        wait_for_request(emulator, f"/latest/meta-data/{path}")
    return readers


def assert_readers_got_an_error(readers: list[subprocess.Popen[bytes]], started: float) -> None:
    for reader in readers:
        _, err = reader.communicate(timeout=DEADLINE + MARGIN)
        assert reader.returncode == 1
        assert b"Input/output error" in err, err
    assert time.monotonic() - started < DEADLINE + MARGIN


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "fusermount3 -u -z"])
def test_unmounting_under_blocked_readers_fails_them_and_exits_cleanly(
    make_mount: MakeMount, emulator: Emulator, how: str
) -> None:
    mounted = make_mount(emulator, "--deadline", str(DEADLINE))
    readers = blocked_readers(mounted, emulator)
    started = time.monotonic()
    if how.startswith("SIG"):
        mounted.process.send_signal(getattr(signal, how))
    else:
        subprocess.run([*how.split(), str(mounted.path)], check=True)
    assert_readers_got_an_error(readers, started)
    assert mounted.process.wait(timeout=DEADLINE + MARGIN) == 0
    assert time.monotonic() - started < DEADLINE + MARGIN
    assert not os.path.ismount(mounted.path)
    assert "Traceback" not in mounted.log()


def test_a_plain_unmount_under_blocked_readers_is_refused_and_harmless(
    mounted_fast: Mounted, emulator: Emulator
) -> None:
    readers = blocked_readers(mounted_fast, emulator)
    started = time.monotonic()
    busy = subprocess.run(["fusermount3", "-u", str(mounted_fast.path)], capture_output=True)
    assert busy.returncode != 0  # the kernel says EBUSY while requests are in flight
    assert b"busy" in busy.stderr
    assert_readers_got_an_error(readers, started)
    assert (mounted_fast.path / "instance-id").read_bytes() == imds_bytes(emulator, "instance-id")
