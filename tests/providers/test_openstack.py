"""The OpenStack provider: EC2's layout from Nova without a token, ``openstack/``, secrets, TTLs."""

from __future__ import annotations

import pytest

from imdsfs import ClientConfig, ConfigError, ImdsClient, TtlPolicy
from imdsfs._provider import NodeKind
from imdsfs.emulator import OpenStackEmulator
from imdsfs.providers.openstack import OpenStackProvider

NOVA = OpenStackProvider(ClientConfig(provider="openstack", endpoint="http://nova.test"), {})


@pytest.mark.parametrize(
    ("path", "url"),
    [
        ("", "/latest/meta-data/"),
        ("placement/availability-zone", "/latest/meta-data/placement/availability-zone"),
        ("public-keys/0/openssh-key", "/latest/meta-data/public-keys/0/openssh-key"),
        ("user-data", "/latest/user-data"),
        ("openstack/", "/openstack/latest/"),
        ("openstack/meta_data.json", "/openstack/latest/meta_data.json"),
        ("openstack/user_data", "/openstack/latest/user_data"),
    ],
)
def test_ec2s_layout_at_the_root_and_openstack_latest_beside_it(path: str, url: str) -> None:
    assert NOVA.url(path) == "http://nova.test" + url


def test_the_root_adds_openstack_and_user_data_but_no_dynamic() -> None:
    """Nova has no dynamic/ category: GET /latest/dynamic/ is a 404 there."""
    extras = {(entry.path, entry.kind) for entry in NOVA.root_extras}
    assert extras == {("openstack/", NodeKind.DIRECTORY), ("user-data", NodeKind.FILE)}


def test_the_password_is_not_a_file_and_public_keys_keep_ec2s_quirk() -> None:
    listing = b"meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json"
    names = [entry.name for entry in NOVA.parse_listing(listing, "openstack/", 100).entries]
    assert names == ["meta_data.json", "user_data", "vendor_data.json", "network_data.json"]
    keys = NOVA.parse_listing(b"0=my-key", "public-keys/", 100).entries
    assert [(e.name, e.kind, e.target) for e in keys] == [
        ("0", NodeKind.DIRECTORY, None),
        ("my-key", NodeKind.SYMLINK, "0"),
    ]


@pytest.mark.parametrize(
    ("environ", "config", "expected"),
    [
        ({}, {}, "http://169.254.169.254"),
        ({}, {"endpoint": "http://10.0.0.9:8775"}, "http://10.0.0.9:8775"),
        # The AWS SDKs' variables are AWS's: an OpenStack mount does not read them.
        ({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://10.1.1.1"}, {}, "http://169.254.169.254"),
        ({"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"}, {}, "http://169.254.169.254"),
    ],
)
def test_the_endpoint_is_the_flag_else_novas_address(
    environ: dict[str, str], config: dict[str, str], expected: str
) -> None:
    resolved = OpenStackProvider.resolve_endpoint(
        ClientConfig(provider="openstack", **config), environ
    )
    assert resolved == expected


def test_ipv6_mode_asks_for_the_link_local_endpoint() -> None:
    with pytest.raises(ConfigError, match="link-local"):
        OpenStackProvider.resolve_endpoint(ClientConfig(endpoint_mode="IPv6"), {})


def test_the_aws_sdks_switch_does_not_refuse_openstack() -> None:
    assert OpenStackProvider.refusal({"AWS_EC2_METADATA_DISABLED": "true"}) is None


@pytest.mark.parametrize(
    "path",
    [
        "user-data",
        "openstack/user_data",
        "openstack/vendor_data.json",
        "openstack/vendor_data2.json",
        "iam/security-credentials/role",  # EC2's rules still hold where a look-alike has them
    ],
)
def test_user_data_and_vendor_data_are_secret(path: str) -> None:
    assert NOVA.secrets.is_secret(path)


@pytest.mark.parametrize(
    "path",
    ["instance-id", "openstack/meta_data.json", "openstack/network_data.json", "openstack/"],
)
def test_the_rest_is_not(path: str) -> None:
    assert not NOVA.secrets.is_secret(path)


@pytest.mark.parametrize(
    ("path", "seconds"),
    [
        ("", 5),
        ("openstack/", 5),
        ("instance-id", 21600),
        ("placement/availability-zone", 21600),
        ("openstack/vendor_data.json", 21600),
        ("openstack/meta_data.json", 60),
        ("openstack/network_data.json", 60),
        ("openstack/vendor_data2.json", 60),
        ("openstack/user_data", 60),
        ("user-data", 60),
    ],
)
def test_ttls_follow_ec2s_rules_and_openstacks_documents(path: str, seconds: float) -> None:
    assert TtlPolicy(builtin=NOVA.ttl_rules).ttl(path) == seconds


async def test_reads_are_plain_gets_with_no_token_put() -> None:
    async with OpenStackEmulator() as nova:
        config = ClientConfig(provider="openstack", endpoint=nova.url)
        async with ImdsClient(config, environ={}) as client:
            assert (await client.get("instance-id")).body == b"i-0000a3f1"
            assert (await client.get("openstack/")).body == nova.get_bytes("openstack/latest/")
            assert client.statistics()["token_puts"] == 0
        assert nova.counters.count(method="PUT") == 0
