"""Instance documents (loading, validation, the packaged default) and the CLI."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imdsfs.emulator import DocumentError, InstanceDocument, default_document, load_document

from .conftest import MakeEmulator, imds_get

MINIMAL: dict[str, object] = {"meta-data": {"instance-id": "i-1"}}


def walk(document: InstanceDocument, directory: str = "meta-data/") -> Iterator[str]:
    """Every path under ``directory`` as a client finds it, following the listings."""
    listing = document.read(directory)
    assert listing is not None
    for entry in listing.decode().split("\n"):
        if entry.endswith("/"):
            yield from walk(document, directory + entry)
        elif "=" in entry and directory.endswith("public-keys/"):
            yield from walk(document, directory + entry.split("=")[0] + "/")
        else:
            yield directory + entry


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1], "document root: expected an object, got an array"),
        ({"dynamic": {}}, 'document root: missing "meta-data"'),
        ({**MINIMAL, "extra": {}}, "/extra: unknown top-level key"),
        ({"meta-data": "x"}, "/meta-data: expected an object, got a string"),
        ({**MINIMAL, "dynamic": []}, "/dynamic: expected a string, an object"),
        ({"meta-data": {"ami-launch-index": 0}}, "/meta-data/ami-launch-index: expected"),
        ({"meta-data": {"a": {"b": None}}}, "/meta-data/a/b: expected a string, an object or"),
        ({"meta-data": {"tags": {"": "x"}}}, "/meta-data/tags: empty key"),
        ({"meta-data": {"a/b": "x"}}, '/meta-data/a~1b: key contains "/"'),
        ({"meta-data": {"a\nb": "x"}}, "key contains a line break"),
        ({**MINIMAL, "user-data": {"$base64": "!!"}}, "/user-data/$base64: bad base64"),
        ({**MINIMAL, "user-data": {"$base64": 5}}, "/user-data/$base64: expected a string"),
        ({**MINIMAL, "user-data": {"$base64": "", "x": ""}}, "/user-data: a {"),
        ({**MINIMAL, "user-data": {"x": "y"}}, "/user-data: expected a string or"),
        (
            {"meta-data": {"public-keys": {"0=a": {}, "0=b": {}}}},
            "/meta-data/public-keys/0=b: index 0 is used twice",
        ),
    ],
)
def test_bad_document_names_the_place(data: object, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DocumentError) as caught:
        load_document(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_invalid_json_is_a_document_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"meta-data": ')
    with pytest.raises(DocumentError, match=r"bad\.json: not valid JSON: .*line 1"):
        load_document(path)


def test_missing_file_is_a_document_error(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="cannot read"):
        load_document(tmp_path / "absent.json")


def test_from_dict_validates_too() -> None:
    with pytest.raises(DocumentError, match="missing"):
        InstanceDocument.from_dict({})


def test_strings_and_base64_leaves_are_served_as_bytes(make_emulator: MakeEmulator) -> None:
    document = InstanceDocument.from_dict(
        {
            "meta-data": {"instance-id": "i-é", "empty": ""},
            "user-data": {"$base64": "AAH/"},
        }
    )
    emu = make_emulator(document, tokens="optional")
    assert imds_get(emu, "/latest/meta-data/instance-id", token=False).content == "i-é".encode()
    assert imds_get(emu, "/latest/meta-data/", token=False).content == b"instance-id\nempty"
    assert imds_get(emu, "/latest/user-data", token=False).content == b"\x00\x01\xff"
    assert imds_get(emu, "/latest/dynamic/", token=False).status_code == 404


def test_document_without_user_data_serves_404(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(InstanceDocument.from_dict(MINIMAL), tokens="optional")
    assert imds_get(emu, "/latest/user-data", token=False).status_code == 404


def test_to_dict_round_trips() -> None:
    document = default_document()
    again = InstanceDocument.from_dict(document.to_dict())
    assert list(walk(again)) == list(walk(document))
    assert again.read("user-data") == document.read("user-data")


def test_default_document_is_a_fresh_copy_each_time() -> None:
    first = default_document()
    first.delete("meta-data/instance-id")
    assert default_document().read("meta-data/instance-id") is not None


REQUIRED_PATHS = [
    "ami-id",
    "ami-launch-index",
    "ami-manifest-path",
    "ancestor-ami-ids",
    "autoscaling/target-lifecycle-state",
    "block-device-mapping/ami",
    "block-device-mapping/ebs1",
    "block-device-mapping/ephemeral0",
    "block-device-mapping/root",
    "block-device-mapping/swap",
    "events/maintenance/history",
    "events/maintenance/scheduled",
    "hibernation/configured",
    "hostname",
    "iam/info",
    "iam/security-credentials/imdsfs-demo-role",
    "identity-credentials/ec2/info",
    "identity-credentials/ec2/security-credentials/ec2-instance",
    "instance-action",
    "instance-id",
    "instance-life-cycle",
    "instance-type",
    "ipv6",
    "local-hostname",
    "local-ipv4",
    "mac",
    "metrics/vhostmd",
    "placement/availability-zone",
    "placement/availability-zone-id",
    "placement/group-name",
    "placement/partition-number",
    "placement/region",
    "product-codes",
    "profile",
    "public-hostname",
    "public-ipv4",
    "public-keys/0/openssh-key",
    "public-keys/1/openssh-key",
    "reservation-id",
    "security-groups",
    "services/domain",
    "services/partition",
    "system",
    "tags/instance/Name",
]
ENI_ENTRIES = [
    "device-number",
    "interface-id",
    "ipv4-associations/",
    "ipv6-prefix",
    "ipv6s",
    "local-hostname",
    "local-ipv4s",
    "mac",
    "network-card-index",
    "owner-id",
    "public-hostname",
    "public-ipv4s",
    "security-group-ids",
    "security-groups",
    "subnet-id",
    "subnet-ipv4-cidr-block",
    "subnet-ipv6-cidr-blocks",
    "vpc-id",
    "vpc-ipv4-cidr-block",
    "vpc-ipv4-cidr-blocks",
    "vpc-ipv6-cidr-blocks",
]


def test_default_document_has_every_category() -> None:
    paths = set(walk(default_document()))
    missing = [path for path in REQUIRED_PATHS if "meta-data/" + path not in paths]
    assert missing == []
    assert not any(path.startswith("meta-data/spot") for path in paths)


def test_default_document_has_two_complete_interfaces() -> None:
    document = default_document()
    macs = (document.read("meta-data/network/interfaces/macs/") or b"").decode().split("\n")
    assert len(macs) == 2
    primary = document.read("meta-data/mac")
    assert primary is not None
    assert macs[0] == primary.decode() + "/"
    for mac in macs:
        base = f"meta-data/network/interfaces/macs/{mac}"
        assert (document.read(base) or b"").decode().split("\n") == ENI_ENTRIES
        assert document.read(base + "mac") == mac.rstrip("/").encode()
        (public_ip,) = (document.read(base + "ipv4-associations/") or b"").decode().split("\n")
        private = document.read(f"{base}ipv4-associations/{public_ip}") or b""
        assert private in (document.read(base + "local-ipv4s") or b"").split(b"\n")


def test_default_document_values_agree_with_each_other() -> None:
    document = default_document()

    def value(path: str) -> str:
        return (document.read(path) or b"").decode()

    eth0 = f"meta-data/network/interfaces/macs/{value('meta-data/mac')}/"
    assert value(eth0 + "ipv4-associations/" + value("meta-data/public-ipv4")) == value(
        "meta-data/local-ipv4"
    )
    assert value(eth0 + "device-number") == "0"
    assert value("meta-data/local-ipv4") in value(eth0 + "local-ipv4s").split("\n")
    assert value("meta-data/ipv6") in value(eth0 + "ipv6s").split("\n")
    assert value("meta-data/hostname").startswith(
        "ip-" + value("meta-data/local-ipv4").replace(".", "-")
    )
    region = value("meta-data/placement/region")
    assert value("meta-data/placement/availability-zone").startswith(region)
    identity = json.loads(value("dynamic/instance-identity/document"))
    assert identity["accountId"] == value(eth0 + "owner-id")
    assert identity["marketplaceProductCodes"] == [value("meta-data/product-codes")]
    assert value("dynamic/instance-identity/document").startswith('{\n  "accountId" : "')
    assert value("dynamic/instance-identity/").split("\n") == [
        "document",
        "pkcs7",
        "rsa2048",
        "signature",
    ]
    assert value("dynamic/fws/instance-monitoring") in ("enabled", "disabled")
    assert value("meta-data/events/maintenance/scheduled") == "[]"


def test_default_user_data_is_gzipped_cloud_config() -> None:
    user_data = default_document().read("user-data")
    assert user_data is not None
    assert gzip.decompress(user_data).startswith(b"#cloud-config\n")


# -- the command line ---------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    return subprocess.Popen(
        [sys.executable, "-m", "imdsfs.emulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_cli_prints_its_url_serves_and_exits_0_on_sigterm() -> None:
    process = run_cli("--port", "0", "--tokens", "optional", "--no-user-data")
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        response = httpx.get(url + "/latest/meta-data/instance-id", trust_env=False)
        assert response.status_code == 200
        assert response.content == default_document().read("meta-data/instance-id")
        assert httpx.get(url + "/latest/user-data", trust_env=False).status_code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert stdout == ""  # the URL was the only line


def test_cli_with_a_bad_document_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"meta-data": {"tags": {"": "x"}}}')
    process = run_cli("--port", "0", "--instance", str(path))
    stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 2
    assert stdout == ""
    assert stderr == f"{path}: /meta-data/tags: empty key\n"
