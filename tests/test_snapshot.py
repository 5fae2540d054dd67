"""Snapshots: ``imdsfs dump`` writes the emulator's document; ``--from-snapshot`` serves it."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from imdsfs._snapshot import crawl
from imdsfs.emulator import (
    AzureEmulator,
    Emulator,
    InstanceDocument,
    OpenStackEmulator,
    default_document,
)

from .conftest import MakeClient, MakeEmulator, MakeGceEmulator, Mounted
from .test_fs import all_leaves
from .test_gce_mount import files_under

DumpOf = Callable[[Emulator], Awaitable[dict[str, object]]]


def imdsfs(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "imdsfs", *args], capture_output=True, timeout=60, check=False
    )


@pytest.fixture
def dump_of(make_client: MakeClient) -> DumpOf:
    """``await dump_of(emulator)``: what ``imdsfs dump`` would write, in process."""

    async def dump(emulator: Emulator) -> dict[str, object]:
        return await crawl(make_client(emulator))

    return dump


# --- dump -------------------------------------------------------------------------------------


def test_dump_of_the_emulator_is_its_document_byte_for_byte(emulator: Emulator) -> None:
    result = imdsfs("dump", "--endpoint", emulator.url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    expected = default_document().to_dict()
    assert json.loads(result.stdout) == expected
    # Same key order too: listings come back in the order IMDS lists them.
    assert json.dumps(json.loads(result.stdout)) == json.dumps(expected)


async def test_bytes_that_are_not_utf8_survive_as_base64(
    make_emulator: MakeEmulator, dump_of: DumpOf
) -> None:
    emulator = make_emulator()
    binary = bytes(range(256))
    text = "naïve\x00\ttab\r\nno newline at the end"
    emulator.set("meta-data/tags/instance/Binary", binary)
    emulator.set("meta-data/tags/instance/Text", text)
    document = await dump_of(emulator)
    tags = document["meta-data"]["tags"]["instance"]  # type: ignore[index]
    assert tags["Binary"] == {"$base64": base64.b64encode(binary).decode()}
    assert tags["Text"] == text
    loaded = InstanceDocument.from_dict(document)
    assert loaded.read("meta-data/tags/instance/Binary") == binary
    assert loaded.read("meta-data/tags/instance/Text") == text.encode()
    assert loaded.read("user-data") == emulator.get_bytes("user-data")  # gzip: base64 too


async def test_an_instance_without_user_data_dumps_without_it(
    make_emulator: MakeEmulator, dump_of: DumpOf
) -> None:
    emulator = make_emulator()
    emulator.delete("user-data")
    document = await dump_of(emulator)
    assert "user-data" not in document
    assert list(document) == ["dynamic", "meta-data"]


async def test_public_keys_keep_their_listed_names(emulator: Emulator, dump_of: DumpOf) -> None:
    keys = (await dump_of(emulator))["meta-data"]["public-keys"]  # type: ignore[index]
    listed = emulator.get_bytes("meta-data/public-keys/").decode().split("\n")
    assert list(keys) == listed  # "0=name", read through public-keys/0/
    assert (
        keys[listed[0]]["openssh-key"]
        == emulator.get_bytes("meta-data/public-keys/0/openssh-key").decode()
    )


def test_dump_to_a_file_is_private(emulator: Emulator, tmp_path: Path) -> None:
    output = tmp_path / "instance.json"
    result = imdsfs("dump", "--endpoint", emulator.url, "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    assert stat.S_IMODE(output.stat().st_mode) == 0o600  # it holds credentials
    assert json.loads(output.read_bytes()) == default_document().to_dict()
    assert os.listdir(tmp_path) == ["instance.json"]  # no temporary file left behind


def test_dump_can_leave_out_every_secret_without_fetching_it(emulator: Emulator) -> None:
    credentials = [
        "meta-data/iam/security-credentials/",
        "meta-data/identity-credentials/ec2/security-credentials/",
    ]
    secrets = [
        emulator.get_bytes(directory + name)
        for directory in credentials
        for name in emulator.get_bytes(directory).decode().split("\n")
    ]
    result = imdsfs("dump", "--endpoint", emulator.url, "--omit-secrets")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert "user-data" not in document
    assert secrets
    for secret in secrets:
        assert json.loads(secret)["SecretAccessKey"].encode() not in result.stdout
    fetched = emulator.counters.paths()
    listings = {f"/latest/{directory}" for directory in credentials}
    credential_reads = [
        path for path in fetched if "security-credentials/" in path and path not in listings
    ]
    assert credential_reads == []  # not even fetched
    assert "/latest/user-data" not in fetched
    # everything else is there, and the file still loads as a document
    expected = default_document().to_dict()
    assert document["meta-data"]["placement"] == expected["meta-data"]["placement"]
    identity = dict(expected["dynamic"]["instance-identity"])  # type: ignore[call-overload]
    for proof in ("pkcs7", "signature", "rsa2048"):  # they prove the instance's identity
        del identity[proof]
    assert document["dynamic"]["instance-identity"] == identity
    assert InstanceDocument.from_dict(document).read("meta-data/instance-id")


def test_dump_without_imds_fails_with_one_line() -> None:
    result = imdsfs("dump", "--endpoint", "http://127.0.0.1:9", "--deadline", "1")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.startswith(b"imdsfs: ")
    assert b"Traceback" not in result.stderr


# --- mount --from-snapshot --------------------------------------------------------------------


def test_a_snapshot_mount_serves_every_byte_with_imds_gone(
    make_mount: Callable[..., Mounted], emulator: Emulator, tmp_path: Path
) -> None:
    snapshot = tmp_path / "instance.json"
    assert imdsfs("dump", "--endpoint", emulator.url, "-o", str(snapshot)).returncode == 0
    leaves = all_leaves(emulator)
    emulator.stop()  # offline from here on

    mounted = make_mount(None, "--from-snapshot", str(snapshot))
    for path, expected in leaves.items():
        assert (mounted.path / path).read_bytes() == expected, path
    assert os.readlink(mounted.path / "public-keys" / "ops-team") == "1"
    url = os.getxattr(mounted.path / "instance-id", "user.imds.url")
    assert url == b"http://snapshot.invalid/latest/meta-data/instance-id"
    assert "serving the snapshot" in mounted.log()


def test_a_bad_snapshot_fails_before_mounting(tmp_path: Path, mount_base: Path) -> None:
    snapshot = tmp_path / "bad.json"
    snapshot.write_text('{"meta-data": {"tags": {"": "x"}}}')
    result = imdsfs("mount", "--foreground", "--from-snapshot", str(snapshot), str(mount_base))
    assert result.returncode == 2
    assert result.stderr.strip().endswith(b"bad.json: /meta-data/tags: empty key")
    assert not os.path.ismount(mount_base)


def test_a_snapshot_takes_no_endpoint(tmp_path: Path, mount_base: Path) -> None:
    result = imdsfs(
        "mount", "--from-snapshot", "x.json", "--endpoint", "http://127.0.0.1:1", str(mount_base)
    )
    assert result.returncode == 2
    assert b"--from-snapshot serves a file: it takes no --endpoint" in result.stderr


def test_a_gce_snapshot_mount_serves_what_the_live_mount_served(
    make_mount: Callable[..., Mounted], make_gce_emulator: MakeGceEmulator, tmp_path: Path
) -> None:
    gce = make_gce_emulator()
    snapshot = tmp_path / "gce.json"
    dumped = imdsfs("dump", "--provider", "gce", "--endpoint", gce.url, "-o", str(snapshot))
    assert dumped.returncode == 0, dumped.stderr
    assert json.loads(snapshot.read_text())["provider"] == "gce"
    live = files_under(make_mount(gce, "--provider", "gce").path)
    gce.stop()  # offline from here on

    mounted = make_mount(None, "--from-snapshot", str(snapshot))
    assert files_under(mounted.path) == live
    assert len([path for path in live if path.endswith("/token")]) == 2
    mode = (mounted.path / "instance/attributes/ssh-keys").stat().st_mode
    assert stat.S_IMODE(mode) == 0o400  # still a secret


def test_an_azure_snapshot_mount_serves_what_the_live_mount_served(
    make_mount: Callable[..., Mounted], tmp_path: Path
) -> None:
    snapshot = tmp_path / "azure.json"
    with AzureEmulator() as azure:
        dumped = imdsfs("dump", "--provider", "azure", "--endpoint", azure.url, "-o", str(snapshot))
        assert dumped.returncode == 0, dumped.stderr
        # The document once, and the two categories it does not hold; none over the limit.
        assert sorted(azure.counters.paths()) == [
            "/metadata/attested/document",
            "/metadata/instance/",
            "/metadata/scheduledevents",
        ]
        assert azure.throttled == 0
        live = files_under(make_mount(azure, "--provider", "azure").path)
    mounted = make_mount(None, "--from-snapshot", str(snapshot))  # offline from here on
    offline = files_under(mounted.path)
    signed = "attested/document"  # signed anew, with its time, at every request
    assert {k: v for k, v in offline.items() if k != signed} == {
        k: v for k, v in live.items() if k != signed
    }
    assert json.loads(offline[signed])["encoding"] == "pkcs7"
    assert offline["user-data"].startswith(b"#cloud-config")
    for secret in ("user-data", "instance/compute/userData", signed):
        assert stat.S_IMODE((mounted.path / secret).stat().st_mode) == 0o400, secret


def test_an_azure_dump_can_leave_its_secrets_out(tmp_path: Path) -> None:
    with AzureEmulator() as azure:
        dumped = imdsfs("dump", "--provider", "azure", "--endpoint", azure.url, "--omit-secrets")
    assert dumped.returncode == 0, dumped.stderr
    files = json.loads(dumped.stdout)["files"]
    assert "instance/compute/vmId" in files
    for secret in ("user-data", "instance/compute/userData", "instance/compute/customData"):
        assert secret not in files
    assert "attested/document" not in files


def test_a_snapshot_of_one_cloud_is_not_mounted_as_another(
    make_gce_emulator: MakeGceEmulator, tmp_path: Path, mount_base: Path
) -> None:
    snapshot = tmp_path / "gce.json"
    gce = make_gce_emulator()
    imdsfs("dump", "--provider", "gce", "--endpoint", gce.url, "-o", str(snapshot))
    result = imdsfs("mount", "--provider", "ec2", "--from-snapshot", str(snapshot), str(mount_base))
    assert result.returncode == 2
    assert b"is a snapshot of gce, not ec2" in result.stderr


def test_an_openstack_snapshot_mount_serves_what_the_live_mount_served(
    make_mount: Callable[..., Mounted], tmp_path: Path
) -> None:
    snapshot = tmp_path / "openstack.json"
    with OpenStackEmulator() as nova:
        dumped = imdsfs(
            "dump", "--provider", "openstack", "--endpoint", nova.url, "-o", str(snapshot)
        )
        assert dumped.returncode == 0, dumped.stderr
        assert nova.counters.count(method="PUT") == 0
        live = files_under(make_mount(None, "--provider", "openstack", "--endpoint", nova.url).path)
    files = json.loads(snapshot.read_text())["files"]  # offline from here on
    assert {"", "user-data", "openstack/", "openstack/vendor_data2.json"} <= set(files)

    mounted = make_mount(None, "--from-snapshot", str(snapshot))
    offline = files_under(mounted.path)
    assert offline.pop("openstack/meta_data.json") == files["openstack/meta_data.json"].encode()
    live.pop("openstack/meta_data.json")  # a random_seed of its own: Nova draws one per GET
    assert offline == live
    assert stat.S_IMODE((mounted.path / "openstack/vendor_data.json").stat().st_mode) == 0o400


def test_an_openstack_dump_can_leave_out_user_data_and_vendor_data(tmp_path: Path) -> None:
    with OpenStackEmulator() as nova:
        dumped = imdsfs("dump", "--provider", "openstack", "--endpoint", nova.url, "--omit-secrets")
        assert dumped.returncode == 0, dumped.stderr
        fetched = nova.counters.paths()
    files = json.loads(dumped.stdout)["files"]
    assert "openstack/meta_data.json" in files
    left_out = ("user-data", "openstack/user_data", "openstack/vendor_data.json")
    assert not set(left_out) & set(files)
    assert "/openstack/latest/vendor_data2.json" not in fetched  # not even fetched
