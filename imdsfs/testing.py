"""Helpers for programs that drive imdsfs from outside: tests, ``make soak``, ``make bench``.

`MountProcess` is the one way they start ``imdsfs mount --foreground`` in a process of its
own, wait until the mount answers, and take it down again the way a user would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MountNotReady", "MountProcess", "answers"]


class MountNotReady(RuntimeError):
    """The daemon exited, or the mount did not answer in time; the message holds its log."""


@dataclass
class MountProcess:
    """A running ``imdsfs mount --foreground`` and where it is mounted."""

    path: Path
    process: subprocess.Popen[bytes]
    log_path: Path | None  # None: the daemon's output is discarded

    @classmethod
    def start(
        cls,
        path: Path,
        *args: str,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 15.0,
    ) -> MountProcess:
        """Start the daemon on *path* (created if missing) with *args*, and return once the
        mount answers. *env* is added to the daemon's environment."""
        path.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "imdsfs", "mount", "--foreground", str(path), *args]
        log = log_path.open("wb") if log_path is not None else subprocess.DEVNULL
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        finally:
            if log_path is not None:
                log.close()  # type: ignore[union-attr]
        mounted = cls(path, process, log_path)
        mounted.wait_until_it_answers(timeout)
        return mounted

    def wait_until_it_answers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not answers(self.path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                status = self.process.wait()
                raise MountNotReady(f"imdsfs did not mount (exit {status}); log:\n{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def unmount(self, timeout: float = 10.0) -> int:
        """Unmount the way a user would and return the daemon's exit status (-9: it had to
        be killed, after its stacks were dumped into its log)."""
        if os.path.ismount(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)  # faulthandler: every stack, into the log
            time.sleep(0.5)
            self.process.kill()
            self.process.wait()
            return -9


def answers(path: Path) -> bool:
    """Mounted and alive. A stale mount left by a crash is a mountpoint too, and even ``stat``
    may answer from the kernel's cache; ``statvfs`` always asks the daemon."""
    try:
        os.statvfs(path)
    except OSError:
        return False
    return os.path.ismount(path)
