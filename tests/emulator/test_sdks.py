"""Real IMDS clients, unchanged, against the emulator: if they work here, the wire format is
what they expect from EC2."""

from __future__ import annotations

import json

import pytest
import urllib3
from botocore.utils import InstanceMetadataFetcher  # type: ignore[import-untyped]
from ec2_metadata import EC2Metadata

from imdsfs.emulator import Emulator

ROLE = "meta-data/iam/security-credentials/imdsfs-demo-role"


@pytest.fixture(autouse=True)
def _no_proxy_or_imds_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def fetcher(emu: Emulator) -> InstanceMetadataFetcher:
    return InstanceMetadataFetcher(timeout=2, num_attempts=2, base_url=emu.url)


def ec2_metadata(emu: Emulator) -> EC2Metadata:
    metadata = EC2Metadata()
    metadata.service_url = emu.url + "/latest/"
    metadata.dynamic_url = metadata.service_url + "dynamic/"
    metadata.metadata_url = metadata.service_url + "meta-data/"
    metadata.userdata_url = metadata.service_url + "user-data/"
    return metadata


def test_botocore_reads_the_role_credentials(emulator: Emulator) -> None:
    expected = json.loads(emulator.get_bytes(ROLE))
    credentials = fetcher(emulator).retrieve_iam_role_credentials()
    assert credentials == {
        "role_name": "imdsfs-demo-role",
        "access_key": expected["AccessKeyId"],
        "secret_key": expected["SecretAccessKey"],
        "token": expected["Token"],
        "expiry_time": expected["Expiration"],
    }
    assert emulator.counters.tokens_issued >= 1
    assert emulator.counters.count(status=401) == 0


def test_botocore_sees_rotated_credentials(emulator: Emulator) -> None:
    before = fetcher(emulator).retrieve_iam_role_credentials()
    emulator.rotate_credentials()
    after = fetcher(emulator).retrieve_iam_role_credentials()
    assert after["access_key"] != before["access_key"]
    assert after["access_key"] == json.loads(emulator.get_bytes(ROLE))["AccessKeyId"]


def test_botocore_retries_through_a_transient_500(emulator: Emulator) -> None:
    emulator.faults.fail_next(1, path="/latest/meta-data/iam/security-credentials/*")
    credentials = fetcher(emulator).retrieve_iam_role_credentials()
    assert credentials["role_name"] == "imdsfs-demo-role"
    assert emulator.counters.count(status=500) == 1


def test_botocore_falls_back_to_v1_when_the_token_put_is_forbidden(emulator: Emulator) -> None:
    emulator.tokens = "optional"
    emulator.faults.fail_next(1, status=403, path="/latest/api/token")
    credentials = fetcher(emulator).retrieve_iam_role_credentials()
    assert credentials["role_name"] == "imdsfs-demo-role"
    assert emulator.counters.tokens_issued == 0


def test_botocore_reports_no_credentials_without_an_instance_profile(
    emulator: Emulator,
) -> None:
    emulator.delete("meta-data/iam")
    assert fetcher(emulator).retrieve_iam_role_credentials() == {}


def test_ec2_metadata_reads_identity_and_user_data(emulator: Emulator) -> None:
    metadata = ec2_metadata(emulator)
    assert metadata.instance_id == emulator.get_bytes("meta-data/instance-id").decode()
    assert metadata.region == emulator.get_bytes("meta-data/placement/region").decode()
    document = json.loads(emulator.get_bytes("dynamic/instance-identity/document"))
    assert metadata.instance_identity_document == document
    assert metadata.user_data == emulator.get_bytes("user-data")
    assert metadata.user_data is not None
    assert metadata.user_data.startswith(b"\x1f\x8b")


def test_ec2_metadata_parses_listings(emulator: Emulator) -> None:
    metadata = ec2_metadata(emulator)
    assert metadata.security_groups == ["default", "web-servers"]
    assert dict(metadata.tags) == {
        "Environment": "staging",
        "Name": "imdsfs-demo",
        "Scratch": "",
        "cost-center": "CC-1234",
    }
    assert sorted(metadata.public_keys) == ["imdsfs-demo-key", "ops-team"]
    assert metadata.public_keys["ops-team"].openssh_key == (
        emulator.get_bytes("meta-data/public-keys/1/openssh-key").decode()
    )
    interfaces = metadata.network_interfaces
    assert len(interfaces) == 2
    primary = interfaces[metadata.mac]
    assert primary.private_ipv4s == [metadata.private_ipv4]
    assert primary.public_ipv4s == [metadata.public_ipv4]


def test_ec2_metadata_sees_a_spot_interruption(emulator: Emulator) -> None:
    metadata = ec2_metadata(emulator)
    assert metadata.spot_instance_action is None
    emulator.schedule_spot_interruption(action="stop")
    metadata.clear_all()
    action = metadata.spot_instance_action
    assert action is not None
    assert action.action == "stop"


def test_ec2_metadata_reports_missing_user_data_as_none(emulator: Emulator) -> None:
    emulator.delete("user-data")
    assert ec2_metadata(emulator).user_data is None


def test_ec2_metadata_reads_the_role_credentials(emulator: Emulator) -> None:
    """The package finds the role by the instance profile's name, as for profiles the
    console creates: the default instance names both alike."""
    credentials = ec2_metadata(emulator).iam_security_credentials
    assert credentials is not None
    expected = json.loads(emulator.get_bytes(ROLE))
    assert credentials["AccessKeyId"] == expected["AccessKeyId"]
    assert credentials["SecretAccessKey"] == expected["SecretAccessKey"]


def test_ec2_metadata_cannot_find_a_role_named_unlike_its_profile(emulator: Emulator) -> None:
    """A profile made outside the console may name its role otherwise; the package assumes
    they match, and finds no credentials. The emulator serves such an instance too."""
    info = json.loads(emulator.get_bytes("meta-data/iam/info"))
    info["InstanceProfileArn"] = info["InstanceProfileArn"].rsplit("/", 1)[0] + "/other-profile"
    emulator.set("meta-data/iam/info", json.dumps(info))
    metadata = ec2_metadata(emulator)
    with pytest.raises(urllib3.exceptions.HTTPError, match="HTTP 404"):
        metadata.iam_security_credentials  # noqa: B018 (the property does the request)
