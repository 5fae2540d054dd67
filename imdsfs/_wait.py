"""``imdsfs wait PATH``: block until a path of a mounted imdsfs exists, or changes.

The path's watch file, ``<mount>/.imdsfs/watch/<path, %-quoted>`` (see `_watch`), is opened
and polled. The daemon refreshes the path while any watch file of it is open, however many
processes wait, and the waiting itself happens in this process's ``poll()``: a timeout or
Ctrl-C ends it at once, and no request of the mount is ever held by it.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import sys
import time

from ._errors import UsageError
from ._paths import CONTROL_NAME, FS_TYPE, WATCH_NAME, mount_table_path, watch_name

__all__ = ["wait"]

_CHUNK = 1 << 20
_RETRY = 0.2  # seconds between opens the mount refused for now


def wait(path: str, *, timeout: float | None = None, changed: bool = False) -> int:
    """Wait for *path* to exist (or, *changed*, to take a value other than its first), then
    write the value to stdout: exit status 0; 1 when *timeout* seconds pass first."""
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    fd = _open_watch_file(path, deadline)
    if fd is None:
        return 1
    try:
        first = _value(fd, path)
        # Readable means "has a value"; POLLPRI means "changed". Waiting for a change, a
        # value that is there already must not count.
        poller = select.poll()
        poller.register(fd, select.POLLPRI if changed else select.POLLPRI | select.POLLIN)
        value = first
        while value is None or (changed and value == first):
            left = deadline - time.monotonic()
            if left <= 0:
                return 1
            if poller.poll(None if math.isinf(left) else math.ceil(left * 1000)):
                value = _value(fd, path)
        sys.stdout.buffer.write(value)
        sys.stdout.flush()
        return 0
    finally:
        with contextlib.suppress(OSError):  # the mount went away: that error is the one
            os.close(fd)


def _open_watch_file(path: str, deadline: float) -> int | None:
    """The descriptor of *path*'s watch file; None if *deadline* passed while the mount said
    "not now" (EAGAIN: others opened watch files of new paths too fast)."""
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory: name a file")
    root = _mount_root(path)
    relative = os.path.relpath(os.path.realpath(path), root)
    watch = os.path.join(root, CONTROL_NAME, WATCH_NAME, watch_name(relative))
    while True:
        try:
            return os.open(watch, os.O_RDONLY)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise UsageError(f"{path}: not a file path imdsfs can watch") from None
            if exc.errno != errno.EAGAIN:
                raise UsageError(f"{path}: {exc.strerror}") from None
        if time.monotonic() + _RETRY > deadline:
            return None
        time.sleep(_RETRY)


def _mount_root(path: str) -> str:
    """The imdsfs mount *path* is in (it need not exist yet); UsageError if none."""
    directory = os.path.realpath(path)
    while not os.path.ismount(directory):
        directory = os.path.dirname(directory)
    if _fs_type(directory) != FS_TYPE or not os.path.isdir(
        os.path.join(directory, CONTROL_NAME, WATCH_NAME)
    ):
        raise UsageError(f"{path} is not in an imdsfs mount")
    return directory


def _fs_type(mount_point: str) -> str | None:
    """The type of the file system mounted last at *mount_point* (`FS_TYPE` for ours), from
    /proc/self/mounts: a directory that merely looks like a mount's must not pass."""
    escaped = mount_table_path(mount_point)
    found = None
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[1] == escaped:
                found = fields[2]
    return found


def _value(fd: int, path: str) -> bytes | None:
    """The whole value, read from the start; None while the path has none, or while the
    service does not answer (the mount keeps asking: a later answer wakes the wait)."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    try:
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        if exc.errno in (errno.EIO, errno.EAGAIN):
            print(f"imdsfs: {path}: {exc.strerror}; still waiting", file=sys.stderr)
            return None
        raise UsageError(f"{path}: {exc.strerror}") from None  # the mount went away
    return b"".join(chunks)
