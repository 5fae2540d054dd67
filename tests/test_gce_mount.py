"""A real mount of the GCE emulator: every file, every mode, the header, and changes pushed."""

from __future__ import annotations

import importlib
import json
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imdsfs.emulator import GceEmulator

from .conftest import ImportCloudInit, Mounted

GCE = ("--provider", "gce")


def files_under(root: Path) -> dict[str, bytes]:
    found = {}
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


@pytest.fixture
def gce_mounted(make_mount: Callable[..., Mounted], gce_emulator: GceEmulator) -> Mounted:
    return make_mount(gce_emulator, *GCE)


def test_every_file_is_the_bytes_a_plain_get_returns(
    gce_mounted: Mounted, gce_emulator: GceEmulator
) -> None:
    mounted = files_under(gce_mounted.path)
    expected = gce_emulator.leaves()
    assert {path: mounted.get(path) for path in expected} == expected
    tokens = [path for path in mounted if path.endswith("/token")]
    assert len(tokens) == 2  # both service accounts; not in the emulator's leaves()
    assert gce_emulator.counters.count(status=403) == 0  # the header on every request


def test_the_root_is_compute_metadata_v1(gce_mounted: Mounted, gce_emulator: GceEmulator) -> None:
    listing = gce_emulator.get_bytes("").decode().split()
    assert sorted(os.listdir(gce_mounted.path)) == sorted(e.rstrip("/") for e in listing)


@pytest.mark.parametrize(
    "path",
    [
        "instance/attributes/ssh-keys",
        "instance/attributes/startup-script",
        "instance/attributes/user-data",
        "project/attributes/ssh-keys",
        "instance/service-accounts/default/token",
    ],
)
def test_tokens_and_attributes_are_root_only(gce_mounted: Mounted, path: str) -> None:
    assert stat.S_IMODE((gce_mounted.path / path).stat().st_mode) == 0o400


def test_a_changed_value_shows_within_two_seconds_whatever_its_ttl(
    gce_mounted: Mounted, gce_emulator: GceEmulator
) -> None:
    path = gce_mounted.path / "instance/attributes/enable-oslogin"  # a 60 s TTL
    before = path.read_bytes()
    time.sleep(0.5)  # the change feed has its first answer
    changed_at = time.monotonic()
    gce_emulator.set("instance/attributes/enable-oslogin", "FALSE" if before == b"TRUE" else "TRUE")
    while path.read_bytes() == before:
        assert time.monotonic() - changed_at < 2.0
        time.sleep(0.05)


def test_maintenance_and_preemption_show_within_two_seconds(
    gce_mounted: Mounted, gce_emulator: GceEmulator
) -> None:
    event = gce_mounted.path / "instance/maintenance-event"
    preempted = gce_mounted.path / "instance/preempted"
    assert (event.read_bytes(), preempted.read_bytes()) == (b"NONE", b"FALSE")
    time.sleep(0.5)
    gce_emulator.schedule_preemption(after=0.0)
    gce_emulator.get_bytes("instance/preempted")  # apply it now, on the emulator's clock
    changed_at = time.monotonic()
    while preempted.read_bytes() != b"TRUE":
        assert time.monotonic() - changed_at < 2.0
        time.sleep(0.05)
    assert event.read_bytes() == b"TERMINATE_ON_HOST_MAINTENANCE"


def test_64_concurrent_cold_readers_of_one_file_cost_one_request(
    gce_mounted: Mounted, gce_emulator: GceEmulator
) -> None:
    account = gce_mounted.path / "instance/service-accounts/default"
    account.stat()  # the directory is known; its token is cold (no subtree read holds one)
    gce_emulator.counters.reset()
    barrier = threading.Barrier(64)
    results: list[bytes] = []

    def read() -> None:
        barrier.wait()
        results.append((account / "token").read_bytes())

    threads = [threading.Thread(target=read) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    token = "/computeMetadata/v1/instance/service-accounts/default/token"
    assert gce_emulator.counters.count(path=token) == 1


def test_a_cold_walk_of_the_whole_mount_costs_a_handful_of_requests(
    make_mount: Callable[..., Mounted], gce_emulator: GceEmulator
) -> None:
    mounted = make_mount(gce_emulator, *GCE)
    time.sleep(0.3)  # the change feed's first answer is in; it is not a read
    gce_emulator.counters.reset()
    files = files_under(mounted.path)  # grep -r, find -exec cat, tar: every file once
    assert {path: files[path] for path in gce_emulator.leaves()} == gce_emulator.leaves()
    requests = [path for path in gce_emulator.counters.paths() if "wait_for_change" not in path]
    assert len(requests) <= 10, requests


def test_cloud_init_and_the_mount_agree(
    gce_mounted: Mounted, gce_emulator: GceEmulator, import_cloud_init: ImportCloudInit
) -> None:
    """cloud-init's GCE datasource, reading the same server, and the files: same values."""
    datasource = import_cloud_init("cloudinit.sources.DataSourceGCE")
    params = importlib.import_module("cloudinit.sources").URLParams(5, 5, 0, 0)
    url = gce_emulator.url + "/computeMetadata/v1/"
    result = datasource.read_md(address=url, url_params=params, platform_check=False)
    assert result["success"], result["reason"]
    metadata, root = result["meta-data"], gce_mounted.path
    assert metadata["instance-id"] == (root / "instance/id").read_text()
    assert metadata["local-hostname"] == (root / "instance/hostname").read_text()
    assert metadata["availability-zone"] == (root / "instance/zone").read_text().split("/")[-1]
    assert result["user-data"] == (root / "instance/attributes/user-data").read_bytes()
    keys = [(root / scope / "attributes/ssh-keys").read_text() for scope in ("instance", "project")]
    assert metadata["public-keys-data"] == [k for text in keys for k in text.splitlines() if k]


def test_a_rotated_token_shows_within_two_seconds(
    gce_mounted: Mounted, gce_emulator: GceEmulator
) -> None:
    """Tokens are not in the change feed (the server mints them per request): their TTL is."""
    token = gce_mounted.path / "instance/service-accounts/default/token"
    before = json.loads(token.read_bytes())["access_token"]
    gce_emulator.rotate_tokens()
    rotated_at = time.monotonic()
    while json.loads(token.read_bytes())["access_token"] == before:
        assert time.monotonic() - rotated_at < 2.0
        time.sleep(0.05)
