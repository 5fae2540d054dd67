"""The ``imdsfs`` command line: usage errors are one line and exit 2, before anything mounts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imdsfs.emulator import Emulator

from .conftest import finish_mount, start_mount


def imdsfs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imdsfs", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("flag", ["--uid", "--gid"])
@pytest.mark.parametrize("value", ["-1", "4294967295", "4294967296", "99999999999999"])
def test_an_owner_out_of_range_is_one_line_and_exit_2(
    mount_base: Path, flag: str, value: str
) -> None:
    result = imdsfs("mount", str(mount_base), "--endpoint", "http://127.0.0.1:9", flag, value)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert flag in result.stderr
    assert "4294967294" in result.stderr
    assert not os.path.ismount(mount_base)


@pytest.mark.parametrize("command", ["mount", "dump"])
@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
def test_aws_ec2_metadata_disabled_refuses_with_one_line(
    mount_base: Path, emulator: Emulator, command: str, value: str
) -> None:
    args = ["mount", str(mount_base)] if command == "mount" else ["dump"]
    result = imdsfs(*args, "--endpoint", emulator.url, env={"AWS_EC2_METADATA_DISABLED": value})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "AWS_EC2_METADATA_DISABLED" in result.stderr
    assert emulator.counters.total == 0
    assert not os.path.ismount(mount_base)


def test_aws_ec2_metadata_disabled_leaves_snapshot_mounts_alone(
    mount_base: Path, emulator: Emulator, tmp_path: Path, fuse_available: None
) -> None:
    snapshot = tmp_path / "snapshot.json"
    assert imdsfs("dump", "--endpoint", emulator.url, "-o", str(snapshot)).returncode == 0
    mounted = start_mount(
        mount_base / "snap",
        tmp_path / "log",
        "--from-snapshot",
        str(snapshot),
        env={"AWS_EC2_METADATA_DISABLED": "true"},
    )
    try:
        assert (mounted.path / "instance-id").read_bytes() == emulator.get_bytes(
            "meta-data/instance-id"
        )
    finally:
        finish_mount(mounted)
