"""An OpenStack config drive as an offline source: ``imdsfs mount --from-config-drive DIR``
serves what Nova's metadata service serves for the same instance."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imdsfs import ClientConfig, ImdsClient
from imdsfs._config_drive import read_config_drive
from imdsfs._errors import ConfigError
from imdsfs._snapshot import crawl_files
from imdsfs.emulator import OpenStackEmulator

from .conftest import Mounted
from .test_gce_mount import files_under
from .test_openstack_mount import same_but_the_seed
from .test_snapshot import imdsfs

SEEDED = "openstack/meta_data.json"


@pytest.fixture
def nova() -> Iterator[OpenStackEmulator]:
    with OpenStackEmulator(seed=7) as emu:
        yield emu


@pytest.fixture
def drive(nova: OpenStackEmulator, tmp_path: Path) -> Path:
    """The emulator's instance as Nova writes it on a config drive (as if mounted here)."""
    nova.config_drive(tmp_path / "config-2")
    return tmp_path / "config-2"


async def served_files(nova: OpenStackEmulator) -> dict[str, bytes]:
    """What ``imdsfs dump --provider openstack`` gets from the service, listings included."""
    config = ClientConfig(provider="openstack", endpoint=nova.url)
    async with ImdsClient(config, environ={}) as client:
        files = (await crawl_files(client))["files"]
    assert isinstance(files, dict)
    return {path: value.encode() for path, value in files.items()}


async def test_the_drive_holds_novas_answers_byte_for_byte(
    nova: OpenStackEmulator, drive: Path
) -> None:
    """Listings and values alike, but for what a drive cannot hold: Nova's per-request
    random_seed, and the password, which Nova lists but never writes on a drive."""
    on_drive, served = read_config_drive(str(drive)), await served_files(nova)
    assert same_but_the_seed(on_drive.pop(SEEDED), served.pop(SEEDED))
    listing = served.pop("openstack/").decode().split("\n")
    assert on_drive.pop("openstack/").decode().split("\n") == [
        name for name in listing if name != "password"
    ]
    assert on_drive == served


def test_a_drive_mount_is_the_live_mount_file_for_file(
    make_mount: Callable[..., Mounted], nova: OpenStackEmulator, drive: Path
) -> None:
    live = files_under(make_mount(None, "--provider", "openstack", "--endpoint", nova.url).path)
    nova.stop()  # offline from here on
    mounted = make_mount(None, "--from-config-drive", str(drive))
    offline = files_under(mounted.path)
    assert offline.pop(SEEDED) == (drive / "openstack/latest/meta_data.json").read_bytes()
    live.pop(SEEDED)
    assert offline == live
    assert os.readlink(mounted.path / "public-keys/imdsfs-demo-key") == "0"
    assert stat.S_IMODE((mounted.path / "openstack/user_data").stat().st_mode) == 0o400
    assert "serving the config drive" in mounted.log()


def test_a_drive_without_user_data_mounts_without_it(
    make_mount: Callable[..., Mounted], nova: OpenStackEmulator, tmp_path: Path
) -> None:
    nova.delete("user-data")
    nova.config_drive(tmp_path / "drive")
    mounted = make_mount(None, "--from-config-drive", str(tmp_path / "drive"))
    assert "user-data" not in os.listdir(mounted.path)
    assert "user_data" not in os.listdir(mounted.path / "openstack")
    assert (mounted.path / "instance-id").read_bytes() == b"i-0000a3f1"


def test_a_drive_with_no_ec2_data_shows_openstack_only(drive: Path) -> None:
    """Bare-metal drives (Ironic) may hold the OpenStack files alone."""
    for name in os.listdir(drive / "ec2/latest"):
        (drive / "ec2/latest" / name).unlink()
    files = read_config_drive(str(drive))
    assert files[""] == b""
    assert "user-data" not in files
    assert files["openstack/user_data"].startswith(b"#cloud-config")


def test_nova_renders_numbers_lists_and_key_names_as_it_serves_them(drive: Path) -> None:
    files = read_config_drive(str(drive))
    assert files["ami-launch-index"] == b"0"  # an int on the drive
    assert files["security-groups"] == b"default\nweb-servers"  # a list on the drive
    assert files["public-keys/"] == b"0=imdsfs-demo-key"  # its _name
    assert files["public-keys/0/"] == b"openssh-key"
    assert files["placement/"] == b"availability-zone"


# -- what is not a config drive, and options that do not go with one -----------------------


def mount_drive(path: Path | str, mountpoint: Path, *args: str) -> tuple[int, str]:
    result = imdsfs(
        "mount", "--foreground", "--from-config-drive", str(path), *args, str(mountpoint)
    )
    assert not os.path.ismount(mountpoint)
    assert b"Traceback" not in result.stderr
    return result.returncode, result.stderr.decode().strip()


def test_a_directory_that_is_not_a_config_drive_is_refused(
    tmp_path: Path, mount_base: Path
) -> None:
    (tmp_path / "openstack").mkdir()
    status, error = mount_drive(tmp_path, mount_base)
    assert status == 2
    assert error == (
        f"imdsfs: {tmp_path} is not a config drive: it has no openstack/latest/meta_data.json"
    )


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/nonexistent/config-2", "/nonexistent/config-2: No such file or directory"),
        ("/dev/null", "/dev/null is not a directory: mount the config-2 file system"),
    ],
)
def test_a_path_that_is_no_directory_is_refused(path: str, problem: str, mount_base: Path) -> None:
    status, error = mount_drive(path, mount_base)
    assert status == 2
    assert error.startswith(f"imdsfs: config drive {problem}")


@pytest.mark.parametrize(
    "meta_data",
    [
        b"{not json",
        b'{"a": ' * 5000 + b'"x"' + b"}" * 5000,  # deeper than Python's recursion limit
        b'{"hostname": "h\\ud800"}',  # a lone surrogate: valid JSON, no UTF-8 for it
        b'{"h\\ud800": "x"}',  # one in a name, which the listing shows
    ],
    ids=["malformed", "deep", "surrogate-value", "surrogate-key"],
)
def test_a_damaged_file_on_the_drive_is_named(
    drive: Path, mount_base: Path, meta_data: bytes
) -> None:
    (drive / "ec2/latest/meta-data.json").write_bytes(meta_data)
    status, error = mount_drive(drive, mount_base)
    assert status == 2
    assert error.startswith(f"imdsfs: config drive {drive}: ec2/latest/meta-data.json: ")
    assert "\n" not in error


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--endpoint", "http://127.0.0.1:9"), "--from-config-drive serves a directory"),
        (("--from-snapshot", "x.json"), "--from-config-drive and --from-snapshot"),
        (("--provider", "ec2"), "a config drive is OpenStack's, not ec2"),
    ],
)
def test_options_that_do_not_go_with_a_drive_are_refused(
    drive: Path, mount_base: Path, args: tuple[str, ...], problem: str
) -> None:
    status, error = mount_drive(drive, mount_base, *args)
    assert status == 2
    assert problem in error


# -- what a drive may not hold: nothing is read but regular files inside it -----------------

SECRET = "root:$6$not-for-the-mount"
LINK_REFUSED = "is a symbolic link: refused, not followed"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the drive, holding what a symlink on the drive might point at."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/shadow").write_text(SECRET)
    (tmp_path / "outside/meta_data.json").write_text(f'{{"secret": "{SECRET}"}}')
    return tmp_path / "outside"


def replace_with_symlink(path: Path, target: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.symlink_to(target)


@pytest.mark.parametrize(
    ("on_drive", "target"),
    [
        ("openstack/latest/network_data.json", "shadow"),  # the file itself
        ("openstack/latest/meta_data.json", "meta_data.json"),  # the one every drive has
        ("ec2/latest/user-data", "shadow"),
        ("openstack/latest", "."),  # a directory on the way: "openstack/latest -> /etc"
        ("openstack", "."),
        ("ec2/latest", "."),
    ],
)
def test_a_symlink_on_the_drive_is_refused_not_followed(
    drive: Path, outside: Path, mount_base: Path, on_drive: str, target: str
) -> None:
    """With --allow-other, a followed link would serve its target (/etc/shadow) to anyone."""
    replace_with_symlink(drive / on_drive, outside / target)
    with pytest.raises(ConfigError) as refused:
        read_config_drive(str(drive))
    assert str(refused.value) == f"config drive {drive}: {on_drive}: {LINK_REFUSED}"
    status, error = mount_drive(drive, mount_base)
    assert (status, error) == (2, f"imdsfs: {refused.value}")
    assert SECRET not in error


def test_a_symlink_within_the_drive_is_refused_too(drive: Path) -> None:
    """Nova writes none: a link is no part of a drive, wherever it points."""
    (drive / "openstack/latest/vendor_data.json").unlink()
    (drive / "openstack/latest/vendor_data.json").symlink_to("vendor_data2.json")
    with pytest.raises(ConfigError) as refused:
        read_config_drive(str(drive))
    assert str(refused.value).endswith(f"openstack/latest/vendor_data.json: {LINK_REFUSED}")


@pytest.mark.parametrize("make", [os.mkfifo, os.mkdir])
def test_what_is_not_a_regular_file_is_refused_unread(
    drive: Path, make: Callable[[Path], None]
) -> None:
    """A FIFO would block the mount forever on open; a device could do worse."""
    (drive / "openstack/latest/network_data.json").unlink()
    make(drive / "openstack/latest/network_data.json")
    with pytest.raises(ConfigError) as refused:
        read_config_drive(str(drive))
    assert str(refused.value).endswith("openstack/latest/network_data.json: not a regular file")


# -- a drive's files are bounded as the service's answers are --------------------------------


def test_a_file_larger_than_max_body_is_refused_unread(drive: Path, mount_base: Path) -> None:
    """Each file is held in memory for the mount's life: one of 300 MB (sparse here, so
    cheap to make) must not be read at all."""
    huge = drive / "openstack/latest/vendor_data2.json"
    os.truncate(huge, 300_000_000)
    status, error = mount_drive(drive, mount_base)
    assert status == 2
    assert error == (
        f"imdsfs: config drive {drive}: openstack/latest/vendor_data2.json: 300000000 bytes, "
        f"over the {ClientConfig().max_body} a response may have (max_body)"
    )


def test_max_body_bounds_every_file_on_the_drive(drive: Path) -> None:
    biggest = max(path.stat().st_size for path in drive.rglob("*") if path.is_file())
    assert read_config_drive(str(drive), max_body=biggest)
    with pytest.raises(ConfigError) as refused:
        read_config_drive(str(drive), max_body=biggest - 1)
    assert str(refused.value).endswith(f"over the {biggest - 1} a response may have (max_body)")
