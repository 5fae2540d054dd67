"""The OpenStack (Nova) metadata emulator over real HTTP: Nova's rules, Neutron's errors, the
config drive, and cloud-init's readers on it."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imdsfs.emulator import Faults, OpenStackEmulator

from ..conftest import ImportCloudInit

EC2_VERSIONS = [
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "latest",
]
META_DATA = [
    "ami-id",
    "ami-launch-index",
    "ami-manifest-path",
    "block-device-mapping/",
    "hostname",
    "instance-action",
    "instance-id",
    "instance-type",
    "local-hostname",
    "local-ipv4",
    "placement/",
    "public-hostname",
    "public-ipv4",
    "public-keys/",
    "reservation-id",
    "security-groups",
]
OS_FILES = [
    "meta_data.json",
    "user_data",
    "password",
    "vendor_data.json",
    "network_data.json",
    "vendor_data2.json",
]
NOT_FOUND_TEXT = b"404 Not Found\n\nThe resource could not be found.\n\n   "
NOT_FOUND_HTML = (
    b"<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n"
    b"  <h1>404 Not Found</h1>\n  The resource could not be found.<br /><br />\n\n\n\n"
    b" </body>\n</html>"
)
NOT_FOUND_JSON = (
    b'{"message": "The resource could not be found.<br /><br />\\n\\n\\n", '
    b'"code": "404 Not Found", "title": "Not Found"}'
)
TEXT = "text/plain; charset=UTF-8"
NO_ACCEPT = {"Accept": ""}  # httpx sends */* unless told otherwise
_client = httpx.Client(trust_env=False)


@pytest.fixture
def nova() -> Iterator[OpenStackEmulator]:
    with OpenStackEmulator(seed=3) as emu:
        yield emu


def get(
    emu: OpenStackEmulator,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> httpx.Response:
    return _client.request(method, emu.url + path, headers=headers)


def lines(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response
    assert not response.content.endswith(b"\n")
    return response.text.split("\n")


# -- the EC2-compatible tree --------------------------------------------------------------


def test_root_lists_novas_ec2_versions(nova: OpenStackEmulator) -> None:
    response = get(nova, "/")
    assert lines(response) == EC2_VERSIONS
    assert response.headers["content-type"] == TEXT


def test_latest_lists_meta_data_with_a_slash_and_user_data(nova: OpenStackEmulator) -> None:
    for path in ("/latest", "/latest/", "/2009-04-04"):
        assert lines(get(nova, path)) == ["meta-data/", "user-data"]
    nova.delete("user-data")
    assert lines(get(nova, "/latest")) == ["meta-data/"]
    assert get(nova, "/latest/user-data").status_code == 404


def test_meta_data_lists_novas_keys_sorted(nova: OpenStackEmulator) -> None:
    assert lines(get(nova, "/latest/meta-data/")) == META_DATA
    assert get(nova, "/2009-04-04/meta-data").content == get(nova, "/latest/meta-data").content


def test_older_ec2_versions_show_fewer_keys(nova: OpenStackEmulator) -> None:
    assert lines(get(nova, "/1.0/meta-data/")) == [
        "ami-id",
        "ami-launch-index",
        "ami-manifest-path",
        "hostname",
        "instance-id",
        "local-ipv4",
        "public-keys/",
        "reservation-id",
        "security-groups",
    ]
    assert "placement/" not in lines(get(nova, "/2007-12-15/meta-data/"))
    assert "instance-action" not in lines(get(nova, "/2008-02-01/meta-data/"))
    assert get(nova, "/2021-03-23/meta-data/", NO_ACCEPT).status_code == 404


def test_leaves_are_exact_bytes(nova: OpenStackEmulator) -> None:
    response = get(nova, "/latest/meta-data/instance-id")
    assert response.content == b"i-0000a3f1"
    assert response.headers["content-type"] == TEXT
    assert get(nova, "/latest/meta-data/placement/availability-zone").content == b"nova"
    assert get(nova, "/latest/meta-data/security-groups").content == b"default\nweb-servers"
    assert get(nova, "/latest/meta-data/ami-launch-index").content == b"0"
    assert lines(get(nova, "/latest/meta-data/block-device-mapping/")) == [
        "ami",
        "ephemeral0",
        "root",
    ]


def test_public_keys_list_index_equals_name(nova: OpenStackEmulator) -> None:
    assert get(nova, "/latest/meta-data/public-keys/").content == b"0=imdsfs-demo-key"
    assert get(nova, "/latest/meta-data/public-keys/0/").content == b"openssh-key"
    key = get(nova, "/latest/meta-data/public-keys/0/openssh-key").content
    assert key.startswith(b"ssh-ed25519 ")
    assert get(nova, "/latest/meta-data/public-keys/0/_name").content == b"0=imdsfs-demo-key"
    assert get(nova, "/latest/meta-data/public-keys/0=imdsfs-demo-key/").status_code == 404


def test_paths_are_normalised_and_the_query_ignored(nova: OpenStackEmulator) -> None:
    for path in (
        "/latest/meta-data/instance-id/",
        "/latest/meta-data/../meta-data/instance-id",
        "/latest//meta-data/instance-id",
        "/latest/meta-data/instance-id?x=1",
        "/ec2/latest/meta-data/instance-id",
    ):
        assert get(nova, path).content == b"i-0000a3f1", path


def test_the_user_data_is_the_raw_bytes(nova: OpenStackEmulator) -> None:
    assert get(nova, "/latest/user-data").content.startswith(b"#cloud-config\n")
    nova.set("user-data", b"\x1f\x8b\x00binary")
    assert get(nova, "/latest/user-data").content == b"\x1f\x8b\x00binary"
    assert get(nova, "/openstack/latest/user_data").content == b"\x1f\x8b\x00binary"


# -- errors as Neutron's proxy sends them ----------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "body", "content_type"),
    [
        ("", NOT_FOUND_TEXT, TEXT),
        ("text/plain", NOT_FOUND_TEXT, TEXT),
        ("*/*", NOT_FOUND_HTML, "text/html; charset=UTF-8"),
        ("application/json", NOT_FOUND_JSON, "application/json"),
        ("text/html;q=0.5, application/json", NOT_FOUND_JSON, "application/json"),
    ],
)
def test_a_404_is_webobs_negotiated_page(
    nova: OpenStackEmulator, accept: str, body: bytes, content_type: str
) -> None:
    response = get(nova, "/latest/meta-data/nothing", {"Accept": accept})
    assert response.status_code == 404
    assert response.content == body
    assert response.headers["content-type"] == content_type


def test_one_segment_below_a_leaf_is_novas_500(nova: OpenStackEmulator) -> None:
    response = get(nova, "/latest/meta-data/instance-id/x", NO_ACCEPT)
    assert response.status_code == 500
    assert response.content == (
        b"500 Internal Server Error\n\n"
        b"Remote metadata server experienced an internal server error.\n\n   "
    )
    assert get(nova, "/latest/meta-data/instance-id/x/y").status_code == 404
    assert get(nova, "/latest/meta-data/security-groups/default").status_code == 500
    assert get(nova, "/latest/meta-data/security-groups/other").status_code == 404
    with pytest.raises(LookupError):
        nova.get_bytes("latest/meta-data/instance-id/x")


def test_the_imdsv2_token_put_is_a_404(nova: OpenStackEmulator) -> None:
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "21600", "Accept": ""}
    response = get(nova, "/latest/api/token", ttl, method="PUT")
    assert response.status_code == 404
    assert response.content == NOT_FOUND_TEXT
    assert "x-aws-ec2-metadata-token-ttl-seconds" not in response.headers


def test_nova_ignores_the_method_elsewhere(nova: OpenStackEmulator) -> None:
    for method in ("PUT", "POST", "DELETE"):
        response = get(nova, "/latest/meta-data/instance-id", method=method)
        assert (response.status_code, response.content) == (200, b"i-0000a3f1")


def test_no_server_header_and_every_connection_closed(nova: OpenStackEmulator) -> None:
    response = get(nova, "/latest/meta-data/instance-id")
    assert "server" not in response.headers
    assert response.headers["connection"] == "close"


# -- the OpenStack format --------------------------------------------------------------------


def test_openstack_lists_its_versions_and_latest(nova: OpenStackEmulator) -> None:
    versions = lines(get(nova, "/openstack"))
    assert versions[0] == "2012-08-10"
    assert versions[-2:] == ["2025-04-04", "latest"]
    assert "2018-08-27" in versions
    assert get(nova, "/openstack/").content == get(nova, "/openstack").content


def test_a_version_lists_its_files(nova: OpenStackEmulator) -> None:
    assert lines(get(nova, "/openstack/latest")) == OS_FILES
    assert lines(get(nova, "/openstack/latest/version")) == OS_FILES  # Nova's alias
    assert lines(get(nova, "/openstack/2012-08-10/")) == ["meta_data.json", "user_data"]
    assert lines(get(nova, "/openstack/2015-10-15")) == OS_FILES[:5]
    nova.delete("user-data")
    assert "user_data" not in lines(get(nova, "/openstack/latest"))
    assert get(nova, "/openstack/latest/user_data").status_code == 404
    assert get(nova, "/openstack/2011-01-01/meta_data.json").status_code == 404


def meta_data(nova: OpenStackEmulator, version: str = "latest") -> Any:
    response = get(nova, f"/openstack/{version}/meta_data.json")
    assert response.headers["content-type"] == "application/json"
    return response.json()


def test_meta_data_json_is_novas_document(nova: OpenStackEmulator) -> None:
    document = meta_data(nova)
    assert list(document)[:2] == ["uuid", "meta"]
    for key in ("uuid", "name", "hostname", "availability_zone", "project_id"):
        assert isinstance(document[key], str), key
    assert document["launch_index"] == 0
    assert document["keys"][0]["name"] in document["public_keys"]
    assert document["devices"][0]["type"] == "nic"
    raw = get(nova, "/openstack/latest/meta_data.json").content
    assert b'", "' in raw  # json.dumps' default separators, as oslo's jsonutils


def test_meta_data_json_has_a_fresh_random_seed_each_time(nova: OpenStackEmulator) -> None:
    first, second = meta_data(nova), meta_data(nova)
    assert len(base64.b64decode(first["random_seed"])) == 512
    assert first["random_seed"] != second["random_seed"]
    assert "random_seed" not in meta_data(nova, "2012-08-10")


def test_meta_data_json_fields_follow_the_version(nova: OpenStackEmulator) -> None:
    assert "project_id" not in meta_data(nova, "2013-10-17")
    assert "devices" not in meta_data(nova, "2015-10-15")
    assert "vlan" not in meta_data(nova, "2016-06-30")["devices"][0]
    assert "vf_trusted" not in meta_data(nova, "2017-02-22")["devices"][0]
    assert "dedicated_cpus" in meta_data(nova, "2020-10-14")
    assert "dedicated_cpus" not in meta_data(nova, "2018-08-27")


def test_network_data_is_json_served_as_text(nova: OpenStackEmulator) -> None:
    response = get(nova, "/openstack/latest/network_data.json")
    assert response.headers["content-type"] == TEXT
    document = response.json()
    assert set(document) == {"links", "networks", "services"}
    assert document["networks"][0]["link"] == document["links"][0]["id"]


def test_vendor_data_is_the_static_part_of_vendor_data2(nova: OpenStackEmulator) -> None:
    static = get(nova, "/openstack/latest/vendor_data.json").json()
    combined = get(nova, "/openstack/latest/vendor_data2.json").json()
    assert combined == {"static": static}
    assert static["registration"]["join_token"].startswith("vjt_")
    assert get(nova, "/openstack/2016-06-30/vendor_data2.json").status_code == 404
    assert get(nova, "/openstack/2013-04-04/vendor_data.json").status_code == 404


def test_the_password_answers_get_only(nova: OpenStackEmulator) -> None:
    response = get(nova, "/openstack/latest/password")
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["content-type"] == "text/html; charset=UTF-8"
    nova.set("openstack/password", "s3cret")
    assert get(nova, "/openstack/latest/password").content == b"s3cret"
    assert get(nova, "/openstack/latest/password", NO_ACCEPT, method="POST").status_code == 400


# -- changing the instance -----------------------------------------------------------------


def test_set_and_delete_show_at_once(nova: OpenStackEmulator) -> None:
    nova.set("meta-data/instance-type", "m1.large")
    assert get(nova, "/latest/meta-data/instance-type").content == b"m1.large"
    nova.delete("meta-data/public-ipv4")
    assert "public-ipv4" not in lines(get(nova, "/latest/meta-data/"))
    nova.set("meta-data/tags", {"role": "db"})  # a key Nova lacks shows in every version
    assert get(nova, "/1.0/meta-data/tags/role").content == b"db"
    nova.set("openstack/meta_data.json/meta/role", "db")
    assert meta_data(nova)["meta"]["role"] == "db"
    nova.set("openstack/vendor_data.json", {"x": 1})
    assert get(nova, "/openstack/latest/vendor_data2.json").json() == {"static": {"x": 1}}


def test_get_bytes_is_what_a_get_returns(nova: OpenStackEmulator) -> None:
    for path in ("latest/meta-data/", "latest/meta-data/hostname", "openstack/latest"):
        assert nova.get_bytes(path) == get(nova, "/" + path).content
    with pytest.raises(KeyError):
        nova.get_bytes("latest/meta-data/nothing")
    with pytest.raises(KeyError):
        nova.delete("meta-data/nothing")


def test_faults_apply(nova: OpenStackEmulator) -> None:
    nova.faults.fail_next(1, status=503, path="/openstack/*")
    assert get(nova, "/openstack/latest/meta_data.json").status_code == 503
    assert get(nova, "/openstack/latest/meta_data.json").status_code == 200
    nova.faults = Faults(error_rate=1.0)
    assert get(nova, "/latest/meta-data/").status_code == 500
    assert nova.counters.count(method="GET", path="/latest/meta-data/") == 1


# -- the config drive ----------------------------------------------------------------------


def test_the_config_drive_holds_the_same_content(nova: OpenStackEmulator, tmp_path: Path) -> None:
    written = nova.config_drive(tmp_path)
    for name in ("meta_data.json", "user_data", "network_data.json", "vendor_data2.json"):
        assert f"openstack/latest/{name}" in written
    assert "openstack/latest/password" not in written
    assert "ec2/latest/meta-data.json" in written
    assert "ec2/1.0/meta-data.json" not in written  # config_drive_skip_versions
    on_drive = json.loads((tmp_path / "openstack/latest/meta_data.json").read_text())
    served = meta_data(nova)
    on_drive.pop("random_seed")
    served.pop("random_seed")
    assert on_drive == served
    user_data = (tmp_path / "openstack/latest/user_data").read_bytes()
    assert user_data == get(nova, "/latest/user-data").content
    ec2 = json.loads((tmp_path / "ec2/latest/meta-data.json").read_text())
    assert ec2["security-groups"] == ["default", "web-servers"]  # Nova's types
    assert ec2["ami-launch-index"] == 0
    # Nova's metadata_for_config_drive means to drop "_name", but its `del` looks in the wrong
    # dict (data["public-keys"], not data["meta-data"]["public-keys"]): it stays on the drive.
    assert ec2["public-keys"] == {
        "0": {
            "_name": "0=imdsfs-demo-key",
            "openssh-key": nova.get_bytes("latest/meta-data/public-keys/0/openssh-key").decode(),
        }
    }
    assert list(ec2)[:4] == ["ami-id", "ami-launch-index", "ami-manifest-path", "instance-id"]


def test_cloud_init_reads_the_config_drive(
    nova: OpenStackEmulator, tmp_path: Path, import_cloud_init: ImportCloudInit
) -> None:
    openstack = import_cloud_init("cloudinit.sources.helpers.openstack")
    nova.config_drive(tmp_path)
    result = openstack.ConfigDriveReader(str(tmp_path)).read_v2()
    assert result["metadata"]["uuid"] == meta_data(nova)["uuid"]
    assert result["metadata"]["instance-id"] == meta_data(nova)["uuid"]
    assert result["userdata"] == get(nova, "/latest/user-data").content
    assert result["ec2-metadata"]["instance-id"] == "i-0000a3f1"
    assert result["vendordata2"]["static"]["registration"]["join_token"].startswith("vjt_")


# -- real clients over HTTP ----------------------------------------------------------------


@pytest.mark.usefixtures("loopback_only")
def test_cloud_init_reads_the_openstack_format(
    nova: OpenStackEmulator, monkeypatch: pytest.MonkeyPatch, import_cloud_init: ImportCloudInit
) -> None:
    openstack = import_cloud_init("cloudinit.sources.helpers.openstack")
    # MetadataReader crawls the EC2 tree at cloud-init's default address; on a real VM that
    # is the same service, so point it here (the guard fails the test if anything escapes).
    crawl = functools.partial(openstack.ec2.get_instance_metadata, metadata_address=nova.url)
    monkeypatch.setattr(openstack.ec2, "get_instance_metadata", crawl)
    result = openstack.MetadataReader(nova.url, retries=0).read_v2()
    # cloud-init picks the newest version it knows among those listed.
    picked = [p for p in nova.counters.paths() if p.endswith("/meta_data.json")]
    assert picked == [f"/openstack/{openstack.OS_VERSIONS[-1]}/meta_data.json"]
    assert nova.counters.count(status=404) == 0
    expected = meta_data(nova)
    assert result["metadata"]["uuid"] == expected["uuid"]
    assert result["metadata"]["public_keys"] == expected["public_keys"]
    assert len(result["metadata"]["random_seed"]) == 512  # decoded by cloud-init
    assert result["userdata"] == get(nova, "/latest/user-data").content
    assert result["networkdata"]["links"][0]["ethernet_mac_address"] == "fa:16:3e:51:9c:2a"
    assert result["vendordata"] == get(nova, "/openstack/latest/vendor_data.json").json()
    assert result["ec2-metadata"]["instance-id"] == "i-0000a3f1"


@pytest.mark.usefixtures("loopback_only")
def test_cloud_init_crawls_the_ec2_tree(
    nova: OpenStackEmulator, import_cloud_init: ImportCloudInit
) -> None:
    ec2 = import_cloud_init("cloudinit.sources.helpers.ec2")
    crawled = ec2.get_instance_metadata(
        api_version="2009-04-04", metadata_address=nova.url, retries=0
    )
    assert crawled["instance-id"] == "i-0000a3f1"
    assert crawled["placement"] == {"availability-zone": "nova"}
    assert crawled["block-device-mapping"] == {
        "ami": "vda",
        "ephemeral0": "/dev/vdb",
        "root": "/dev/vda",
    }
    assert crawled["security-groups"] == ["default", "web-servers"]
    assert crawled["public-keys"]["imdsfs-demo-key"] == (
        nova.get_bytes("latest/meta-data/public-keys/0/openssh-key").decode()
    )
    user_data = ec2.get_instance_userdata(metadata_address=nova.url, retries=0)
    assert user_data == get(nova, "/latest/user-data").content
    assert nova.counters.count(status=500) == 0
    assert nova.counters.count(status=404) == 0


@pytest.mark.usefixtures("loopback_only")
def test_botocore_falls_back_to_plain_gets_on_the_404_token_answer(
    nova: OpenStackEmulator,
) -> None:
    from botocore.utils import InstanceMetadataRegionFetcher  # type: ignore[import-untyped]

    fetcher = InstanceMetadataRegionFetcher(timeout=2, num_attempts=1, base_url=nova.url)
    assert fetcher.retrieve_region() == "nov"  # botocore drops the zone letter of "nova"
    assert nova.counters.count(method="PUT", path="/latest/api/token", status=404) == 1
    assert nova.counters.count(method="GET", status=200) == 1
