"""Mount lifecycle (`imdsfs._mount`): warnings at mount time, where a background mount logs,
and how it ends."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imdsfs import _mount
from imdsfs.emulator import Emulator

from .conftest import finish_mount, start_mount
from .test_cli import imdsfs


def test_mounting_where_nothing_answers_warns_naming_the_endpoint(
    mount_base: Path, tmp_path: Path, fuse_available: None
) -> None:
    mounted = start_mount(mount_base / "m", tmp_path / "log", "--endpoint", "http://127.0.0.1:9")
    try:
        warnings = [line for line in mounted.log().splitlines() if "WARNING" in line]
        assert len(warnings) == 1
        assert "http://127.0.0.1:9" in warnings[0]
        assert "nothing answers" in warnings[0]
    finally:
        finish_mount(mounted)


def test_a_background_mount_returns_at_once_and_warns_where_nothing_answers(
    mount_base: Path, tmp_path: Path, fuse_available: None
) -> None:
    log_file = tmp_path / "imdsfs.log"
    target = mount_base / "bg"
    target.mkdir()
    result = imdsfs(
        "mount", str(target), "--endpoint", "http://127.0.0.1:9", "--log-file", str(log_file)
    )
    try:
        assert result.returncode == 0, result.stderr
        assert "nothing answers at http://127.0.0.1:9" in result.stderr
        assert os.path.ismount(target)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(target)], check=False)
    for _ in range(50):  # the daemon's last words go to the file it was given
        if "unmounted" in (log_file.read_text() if log_file.exists() else ""):
            break
        time.sleep(0.1)
    assert "unmounted" in log_file.read_text()


# --- where a background mount logs ---------------------------------------------------------------


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, with its handlers put back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:]
    yield root
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in saved:
        root.addHandler(handler)


def test_without_syslog_a_background_mount_logs_to_a_file_and_says_where(
    root_logger: logging.Logger,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(_mount, "_SYSLOG_SOCKET", str(tmp_path / "no-syslog-here"))
    monkeypatch.setattr(_mount, "default_log_file", lambda: str(tmp_path / "state/imdsfs.log"))
    _mount._log_in_background(None)
    logging.getLogger("imdsfs.test").error("the daemon fell over")
    assert "the daemon fell over" in (tmp_path / "state/imdsfs.log").read_text()
    assert str(tmp_path / "state/imdsfs.log") in capsys.readouterr().err


def test_the_default_log_file_is_var_log_for_root_and_xdg_state_for_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert _mount.default_log_file() == "/var/log/imdsfs.log"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert _mount.default_log_file() == str(tmp_path / "imdsfs.log")


def test_a_log_file_given_is_used_even_with_syslog(
    root_logger: logging.Logger, tmp_path: Path
) -> None:
    _mount._log_in_background(str(tmp_path / "chosen.log"))
    logging.getLogger("imdsfs.test").warning("look here")
    line = (tmp_path / "chosen.log").read_text()
    assert "WARNING imdsfs.test: look here" in line


def test_a_lazy_unmount_ends_the_daemon_at_once_even_with_a_file_held_open(
    mount_base: Path, tmp_path: Path, emulator: Emulator, fuse_available: None
) -> None:
    mounted = start_mount(mount_base / "lazy", tmp_path / "log", "--endpoint", emulator.url)
    held = os.open(mounted.path / "instance-id", os.O_RDONLY)
    try:
        started = time.monotonic()
        subprocess.run(["fusermount3", "-u", "-z", str(mounted.path)], check=True)
        assert mounted.process.wait(timeout=5) == 0
        assert time.monotonic() - started < 2.0
        assert "the mount was detached" in mounted.log()
    finally:
        os.close(held)
