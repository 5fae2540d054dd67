"""systemd integration: the sd_notify protocol (against a fake NOTIFY_SOCKET) and the unit."""

from __future__ import annotations

import configparser
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imdsfs import _cli
from imdsfs._systemd import notify
from imdsfs.emulator import Emulator

from .conftest import Mounted

UNIT = Path(__file__).parent.parent / "scripts" / "systemd" / "imdsfs.service"
# Options that give the service its own mount namespace, so /run/imds would be invisible.
NAMESPACING = (
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "TemporaryFileSystem",
    "BindPaths",
    "RootDirectory",
)


@pytest.fixture
def notify_socket(mount_base: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's, and its address for NOTIFY_SOCKET.

    Bound under mount_base: AF_UNIX paths must stay under 108 bytes, pytest's tmp_path may not.
    """
    path = mount_base / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        yield sock, str(path)


# --- the protocol -----------------------------------------------------------------------------


def test_notify_without_systemd_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_notify_sends_one_datagram_to_a_path_socket(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert notify("READY=1\nSTATUS=up") is True
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_notify_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"imdsfs-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)  # what systemd means by "@name"
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STOPPING=1") is True
        assert sock.recv(4096) == b"STOPPING=1"


def test_an_unreachable_socket_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING):
        assert notify("READY=1") is False
    assert "cannot notify systemd" in caplog.text


# --- the daemon -------------------------------------------------------------------------------


def test_the_daemon_reports_ready_once_mounted_and_stopping_on_unmount(
    make_mount: Callable[..., Mounted],
    emulator: Emulator,
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, address = notify_socket
    mounted = make_mount(emulator, env={"NOTIFY_SOCKET": address})
    ready = sock.recv(4096).decode()
    assert ready.split("\n")[0] == "READY=1"
    assert f"STATUS=serving {emulator.url} at {mounted.path}" in ready.split("\n")
    assert os.path.ismount(mounted.path)
    assert (mounted.path / "instance-id").read_bytes() == emulator.get_bytes(
        "meta-data/instance-id"
    )
    assert mounted.unmount() == 0
    assert sock.recv(4096).decode() == f"STOPPING=1\nSTATUS=stopping: unmounting {mounted.path}"
    # systemd shows the last STATUS= of a stopped unit: it must not still say "serving".
    assert sock.recv(4096).decode() == f"STATUS=stopped: unmounted {mounted.path}"


# --- the unit file ----------------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    # strict=False: systemd allows a key (ExecStartPre) more than once; keep the last.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read(UNIT)
    return parser


def test_the_unit_is_type_notify_and_clears_stale_mounts() -> None:
    text = UNIT.read_text()
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    # A dead mount is cleared after the daemon goes, and only when there is one: an
    # unconditional fusermount3 logs "failed to unmount" at every clean start and stop.
    assert service["ExecStopPost"] == (
        "-/bin/sh -c 'if mountpoint -q /run/imds; then exec fusermount3 -u -z /run/imds; fi'"
    )
    starts = [line for line in text.splitlines() if line.startswith("ExecStartPre=")]
    assert not [line for line in starts if "fusermount" in line]  # imdsfs clears one itself


def test_a_configuration_error_is_not_restarted() -> None:
    # Exit status 2 is a configuration error (imdsfs._cli): Restart= could only loop on it.
    service = _unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"].split() == ["2"]


def test_the_unit_has_no_option_that_would_hide_the_mount() -> None:
    keys = {line.split("=", 1)[0] for line in UNIT.read_text().splitlines() if "=" in line}
    assert not keys & set(NAMESPACING)


def test_the_units_command_line_is_one_imdsfs_accepts() -> None:
    argv = shlex.split(_unit()["Service"]["ExecStart"].replace("$IMDSFS_OPTS", ""))
    assert argv[0] == "/usr/local/bin/imdsfs"
    args = _cli._parser().parse_args(argv[1:])
    assert args.run is _cli._run_mount
    assert args.foreground  # Type=notify: the main process is the daemon itself
    assert args.mountpoint == "/run/imds"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's imdsfs.
    imdsfs = str(Path(sys.executable).parent / "imdsfs")
    unit = tmp_path / "imdsfs.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/imdsfs", imdsfs))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "imdsfs.service" not in result.stderr, result.stderr  # no warning about our unit
