"""The mount(8) convention: ``imdsfs SOURCE DIR -o OPTIONS``, and real ``mount -t fuse.imdsfs``."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imdsfs import _cli
from imdsfs._errors import ConfigError
from imdsfs._fstab import SWITCHES, VALUED, is_fstab_form, to_mount_arguments
from imdsfs.emulator import Emulator

from .conftest import FUSE_REQUIRED

MOUNT_HELPER = Path("/sbin/mount.fuse3")
# mount.fuse3 runs `imdsfs` with PATH fixed to /usr/local/sbin:/usr/local/bin:/usr/sbin:...
INSTALLED = Path("/usr/local/bin/imdsfs")
THIS_IMDSFS = Path(sys.executable).parent / "imdsfs"


# --- translation ------------------------------------------------------------------------------


def test_the_line_mount_fuse3_runs_for_root_becomes_a_mount_command() -> None:
    # fstab: imds /run/imds fuse.imdsfs ro,allow_other 0 0 (mount.fuse3 appends dev,suid)
    argv = ["imds", "/run/imds", "-o", "ro,allow_other,dev,suid"]
    assert to_mount_arguments(argv) == ["mount", "/run/imds", "--allow-other"]


def test_valued_options_become_flag_and_value_and_may_repeat() -> None:
    options = "endpoint=http://[fd00:ec2::254],ttl=spot/**=2,ttl=default=120,uid=1000"
    assert to_mount_arguments(["imds", "/m", "-o", options]) == [
        "mount",
        "/m",
        "--endpoint",
        "http://[fd00:ec2::254]",
        "--ttl",
        "spot/**=2",
        "--ttl",
        "default=120",
        "--uid",
        "1000",
    ]


def test_generic_options_are_ignored_in_any_spelling() -> None:
    generic = "rw,defaults,noauto,nofail,_netdev,nodev,nosuid,noexec,noatime,x-systemd.automount"
    assert to_mount_arguments(["imds", "/m", f"-o{generic}", "-o", "debug"]) == [
        "mount",
        "/m",
        "--debug",
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("ro,compress", "unknown mount option 'compress'"),
        ("allow_other=1", "write it as allow_other"),
        ("uid", "write it as uid=VALUE"),
    ],
)
def test_a_bad_option_is_one_clear_error(options: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        to_mount_arguments(["imds", "/m", "-o", options])


def test_anything_but_o_after_the_mountpoint_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unexpected argument '--uid'"):
        to_mount_arguments(["imds", "/m", "--uid", "3"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["imds", "/run/imds", "-o", "ro"], True),
        (["imds", "/run/imds"], True),
        (["mount", "/run/imds"], False),
        (["stats", "/run/imds"], False),
        (["--version"], False),
        (["mout"], False),  # a typo still gets argparse's "invalid choice"
    ],
)
def test_the_fstab_form_is_told_apart_from_commands(argv: list[str], expected: bool) -> None:
    assert is_fstab_form(argv, _cli.COMMANDS) is expected


def test_every_fstab_option_is_an_option_of_imdsfs_mount() -> None:
    samples = {
        "uid": "1000",
        "gid": "1000",
        "endpoint": "http://127.0.0.1:1338",
        "endpoint_mode": "IPv6",
        "token_ttl": "60",
        "ttl": "spot/**=2",
        "deadline": "3",
        "stale_bound": "60",
        "max_requests": "4",
        "secret_mode": "0440",
        "snapshot": "/tmp/instance.json",
        "config_drive": "/mnt/config-2",
        "log_file": "/var/log/imds.log",
        "provider": "ec2",
    }
    assert set(samples) == set(VALUED)
    options = [*SWITCHES, *(f"{name}={value}" for name, value in samples.items())]
    args = _cli._parser().parse_args(to_mount_arguments(["imds", "/m", "-o", ",".join(options)]))
    switches = (args.allow_other, args.allow_imdsv1, args.debug, args.foreground, args.prefetch)
    assert all(switches)
    assert (args.uid, args.endpoint_mode, args.token_ttl, args.ttl) == (
        1000,
        "IPv6",
        60,
        ["spot/**=2"],
    )
    assert (args.deadline, args.stale_bound, args.max_requests) == (3.0, 60.0, 4)
    assert (args.secret_mode, args.from_snapshot) == (0o440, "/tmp/instance.json")
    assert args.log_file == "/var/log/imds.log"
    assert args.from_config_drive == "/mnt/config-2"


def test_main_reports_a_bad_fstab_option_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["imds", "/run/imds", "-o", "ro,bogus"]) == 2
    assert "imdsfs: unknown mount option 'bogus'" in capsys.readouterr().err


# --- real mount(8) ----------------------------------------------------------------------------


@pytest.fixture
def imdsfs_on_mount_path(fuse_available: None) -> Iterator[None]:
    """This checkout's ``imdsfs`` at /usr/local/bin (what ``make install`` does), removed
    afterwards unless it was there before. A lock keeps concurrent test runs from removing
    it under each other."""
    if not MOUNT_HELPER.exists():
        reason = f"{MOUNT_HELPER} is missing (apt install fuse3)"
        pytest.fail(reason) if FUSE_REQUIRED else pytest.skip(reason)
    lock_path = Path(tempfile.gettempdir()) / "imdsfs-tests-install.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if INSTALLED.exists() or INSTALLED.is_symlink():
            if INSTALLED.resolve() != THIS_IMDSFS.resolve():
                pytest.fail(f"{INSTALLED} is another imdsfs; remove it or run make install here")
            yield
            return
        INSTALLED.symlink_to(THIS_IMDSFS)
        try:
            yield
        finally:
            INSTALLED.unlink()


@pytest.fixture
def mountpoint(mount_base: Path) -> Iterator[Path]:
    """An empty directory; whatever ends up mounted there is unmounted and its daemon gone."""
    path = mount_base / "imds"
    path.mkdir()
    yield path
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], check=False)
    for pid in _daemons_serving(path):
        os.kill(pid, 9)


def _daemons_serving(path: Path) -> list[int]:
    """imdsfs processes whose command line names *path* (detached: no Popen to ask)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or it just exited
            continue
        if os.fsencode(path) in argv and any(b"imdsfs" in arg for arg in argv):
            pids.append(int(entry.name))
    return pids


def _wait_until_gone(path: Path, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while _daemons_serving(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _mount_options(path: Path) -> tuple[str, set[str]]:
    """(type, options) of the mount at *path*, from /proc/mounts."""
    for line in Path("/proc/mounts").read_text().splitlines():
        _source, target, fstype, options, *_ = line.split()
        if target == str(path):
            return fstype, set(options.split(","))
    raise AssertionError(f"{path} is not in /proc/mounts")


def _mount(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *argv], capture_output=True, text=True, timeout=30, check=False)


def _check_mounted_and_unmount(path: Path, emulator: Emulator) -> None:
    """mount(8) has returned: the mount must answer already, with the options imdsfs forces,
    and umount(8) must end the detached daemon."""
    assert (path / "instance-id").read_bytes() == emulator.get_bytes("meta-data/instance-id")
    fstype, options = _mount_options(path)
    assert fstype == "fuse.imdsfs"
    assert {"ro", "nodev", "nosuid", "noexec", "allow_other"} <= options  # despite dev,suid
    assert _daemons_serving(path), "no daemon process found for the mount"
    assert subprocess.run(["umount", str(path)], check=False).returncode == 0
    assert not os.path.ismount(path)
    assert _wait_until_gone(path), "the daemon outlived its mount"


@pytest.mark.usefixtures("imdsfs_on_mount_path")
def test_mount_t_fuse_imdsfs_returns_once_mounted(mountpoint: Path, emulator: Emulator) -> None:
    options = f"ro,allow_other,_netdev,nofail,endpoint={emulator.url},ttl=spot/**=1"
    result = _mount("-t", "fuse.imdsfs", "imds", str(mountpoint), "-o", options)
    assert result.returncode == 0, result.stderr
    _check_mounted_and_unmount(mountpoint, emulator)


@pytest.mark.usefixtures("imdsfs_on_mount_path")
def test_an_fstab_line_mounts_with_mount_dir(
    mountpoint: Path, emulator: Emulator, tmp_path: Path
) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"imds {mountpoint} fuse.imdsfs ro,allow_other,nodev,nosuid,_netdev,nofail,"
        f"endpoint={emulator.url} 0 0\n"
    )
    result = _mount("--fstab", str(fstab), str(mountpoint))
    assert result.returncode == 0, result.stderr
    _check_mounted_and_unmount(mountpoint, emulator)


@pytest.mark.usefixtures("imdsfs_on_mount_path")
def test_mount_fails_with_imdsfs_message_on_an_unknown_option(
    mountpoint: Path, emulator: Emulator
) -> None:
    options = f"ro,endpoint={emulator.url},compress"
    result = _mount("-t", "fuse.imdsfs", "imds", str(mountpoint), "-o", options)
    assert result.returncode != 0
    assert "imdsfs: unknown mount option 'compress'" in result.stderr
    assert not os.path.ismount(mountpoint)
