"""A real mount of the OpenStack (Nova) emulator: every file, every mode, no token, and the
same values cloud-init reads."""

from __future__ import annotations

import functools
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imdsfs.emulator import OpenStackEmulator

from .conftest import ImportCloudInit, Mounted
from .test_gce_mount import files_under

OPENSTACK = ("--provider", "openstack")
SECRETS = ("user-data", "openstack/user_data", "openstack/vendor_data.json")
SECRETS += ("openstack/vendor_data2.json",)


@pytest.fixture
def nova() -> Iterator[OpenStackEmulator]:
    with OpenStackEmulator(seed=5) as emu:
        yield emu


@pytest.fixture
def nova_mounted(make_mount: Callable[..., Mounted], nova: OpenStackEmulator) -> Mounted:
    return make_mount(None, *OPENSTACK, "--endpoint", nova.url)


def served(nova: OpenStackEmulator) -> dict[str, bytes]:
    """What Nova serves, by the mount path it should have: the EC2 tree of ``/latest/`` at the
    root (``0=name`` read as ``0/``), ``user-data``, and ``/openstack/latest/``'s files but
    the password. Walked with plain GETs, independently of imdsfs."""
    files: dict[str, bytes] = {}

    def walk(directory: str) -> None:
        for line in nova.get_bytes(f"latest/meta-data/{directory}").decode().split("\n"):
            name = line.split("=")[0] + "/" if directory == "public-keys/" else line
            if name.endswith("/"):
                walk(directory + name)
            else:
                files[directory + name] = nova.get_bytes(f"latest/meta-data/{directory}{name}")

    walk("")
    files["user-data"] = nova.get_bytes("latest/user-data")
    for name in nova.get_bytes("openstack/latest/").decode().split("\n"):
        if name != "password":
            files[f"openstack/{name}"] = nova.get_bytes(f"openstack/latest/{name}")
    return files


def same_but_the_seed(mounted: bytes, served: bytes) -> bool:
    """meta_data.json as served, but for its random_seed, which Nova draws anew for every
    request: the served bytes with the mount's seed in place of their own."""
    seed, other = (json.loads(body)["random_seed"] for body in (mounted, served))
    return mounted == served.replace(other.encode(), seed.encode())


def test_every_file_is_the_bytes_nova_serves_for_its_path(
    nova_mounted: Mounted, nova: OpenStackEmulator
) -> None:
    mounted, expected = files_under(nova_mounted.path), served(nova)
    assert sorted(mounted) == sorted(expected)
    seeded = "openstack/meta_data.json"
    assert same_but_the_seed(mounted.pop(seeded), expected.pop(seeded))
    assert mounted == expected


def test_the_root_is_ec2s_with_openstack_and_no_dynamic(
    nova_mounted: Mounted, nova: OpenStackEmulator
) -> None:
    listed = [line.rstrip("/") for line in nova.get_bytes("latest/meta-data/").decode().split()]
    assert sorted(os.listdir(nova_mounted.path)) == sorted([*listed, "openstack", "user-data"])
    assert os.readlink(nova_mounted.path / "public-keys/imdsfs-demo-key") == "0"
    assert "password" not in os.listdir(nova_mounted.path / "openstack")


def test_no_token_is_ever_asked_for(nova_mounted: Mounted, nova: OpenStackEmulator) -> None:
    files_under(nova_mounted.path)
    assert nova.counters.count(method="GET", status=200) > 20
    assert nova.counters.count(method="PUT") == 0
    assert nova.counters.count(status=404) == 0  # no dynamic/, no password, nothing guessed


def test_user_data_and_vendor_data_are_root_only(nova_mounted: Mounted) -> None:
    modes = {
        str(path.relative_to(nova_mounted.path)): stat.S_IMODE(path.stat().st_mode)
        for path in nova_mounted.path.rglob("*")
        if path.is_file() and not path.is_symlink()
    }
    assert {path for path, mode in modes.items() if mode == 0o400} == set(SECRETS)
    assert {mode for path, mode in modes.items() if path not in SECRETS} == {0o444}


@pytest.mark.usefixtures("loopback_only")
def test_cloud_init_and_the_mount_agree(
    nova_mounted: Mounted,
    nova: OpenStackEmulator,
    monkeypatch: pytest.MonkeyPatch,
    import_cloud_init: ImportCloudInit,
) -> None:
    """cloud-init's OpenStack reader and its EC2 crawler, on the same service: same values."""
    openstack = import_cloud_init("cloudinit.sources.helpers.openstack")
    crawl = functools.partial(openstack.ec2.get_instance_metadata, metadata_address=nova.url)
    monkeypatch.setattr(openstack.ec2, "get_instance_metadata", crawl)
    result = openstack.MetadataReader(nova.url, retries=0).read_v2()
    root = nova_mounted.path

    def document(name: str) -> object:
        return json.loads((root / "openstack" / name).read_bytes())

    metadata = {k: v for k, v in result["metadata"].items() if k != "random_seed"}
    mounted = document("meta_data.json")
    assert isinstance(mounted, dict)
    assert {key: mounted[key] for key in metadata if key in mounted} == {
        key: value for key, value in metadata.items() if key in mounted
    }
    assert result["userdata"] == (root / "openstack/user_data").read_bytes()
    assert result["userdata"] == (root / "user-data").read_bytes()
    assert result["networkdata"] == document("network_data.json")
    assert result["vendordata"] == document("vendor_data.json")
    assert result["vendordata2"] == document("vendor_data2.json")

    ec2 = result["ec2-metadata"]  # cloud-init's EC2 crawl of /2009-04-04/
    assert ec2["instance-id"] == (root / "instance-id").read_text()
    zone = (root / "placement/availability-zone").read_text()
    assert ec2["placement"] == {"availability-zone": zone}
    assert ec2["block-device-mapping"] == {
        name: (root / "block-device-mapping" / name).read_text()
        for name in os.listdir(root / "block-device-mapping")
    }
    assert ec2["security-groups"] == (root / "security-groups").read_text().split("\n")
    assert ec2["public-keys"] == {
        "imdsfs-demo-key": (root / "public-keys/imdsfs-demo-key/openssh-key").read_text()
    }


def test_auto_detects_openstack_by_probing_with_one_token_put_at_most(
    make_mount: Callable[..., Mounted], nova: OpenStackEmulator, tmp_path: Path
) -> None:
    """DMI names no cloud: the probes find Nova (its /openstack/ answers; the EC2 probe's token
    PUT gets its 404), and the mount asks for no token of its own."""
    env = {"IMDSFS_DMI_DIR": str(tmp_path)}  # empty: the firmware says nothing
    mounted = make_mount(None, "--endpoint", nova.url, env=env)
    assert (mounted.path / "instance-id").read_bytes() == b"i-0000a3f1"
    files_under(mounted.path)
    assert nova.counters.count(method="PUT") <= 1
    assert "provider openstack: its metadata service answered" in mounted.log()


def test_auto_from_dmi_probes_nothing(
    make_mount: Callable[..., Mounted], nova: OpenStackEmulator, tmp_path: Path
) -> None:
    (tmp_path / "product_name").write_text("OpenStack Nova\n")
    mounted = make_mount(None, "--endpoint", nova.url, env={"IMDSFS_DMI_DIR": str(tmp_path)})
    files_under(mounted.path)
    assert nova.counters.count(method="PUT") == 0
    assert nova.counters.count(path="/openstack/") == 0  # no probe
    assert "provider openstack: the firmware says so" in mounted.log()
