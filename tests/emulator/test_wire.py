"""The emulator's wire format: listings, leaves, 404s, headers, methods."""

from __future__ import annotations

import email.utils
import json
import socket

import httpx
import pytest
import trio

from imdsfs.emulator import Emulator

from ..conftest import MakeEmulator, imds_get, imds_request, imds_token

NOT_FOUND_PAGE = (
    b'<?xml version="1.0" encoding="iso-8859-1"?>\n'
    b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
    b'\t\t "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
    b'<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
    b" <head>\n  <title>404 - Not Found</title>\n </head>\n"
    b" <body>\n  <h1>404 - Not Found</h1>\n </body>\n</html>\n"
)


def test_url_has_the_bound_port_and_no_trailing_slash(emulator: Emulator) -> None:
    assert emulator.port > 0
    assert emulator.url == f"http://127.0.0.1:{emulator.port}"


def test_root_lists_versions_ending_in_latest(emulator: Emulator) -> None:
    response = imds_get(emulator, "/")
    assert response.status_code == 200
    versions = response.content.split(b"\n")
    assert versions[0] == b"1.0"
    assert versions[-1] == b"latest"
    assert b"2021-03-23" in versions
    assert not response.content.endswith(b"\n")


@pytest.mark.parametrize("path", ["/latest", "/latest/"])
def test_latest_lists_three_names_without_slashes(emulator: Emulator, path: str) -> None:
    assert imds_get(emulator, path).content == b"dynamic\nmeta-data\nuser-data"


def test_latest_lists_user_data_even_when_there_is_none(emulator: Emulator) -> None:
    emulator.delete("user-data")
    assert imds_get(emulator, "/latest/").content == b"dynamic\nmeta-data\nuser-data"
    assert imds_get(emulator, "/latest/user-data").status_code == 404


def test_listing_marks_directories_with_a_slash_and_has_no_final_newline(
    emulator: Emulator,
) -> None:
    body = imds_get(emulator, "/latest/meta-data/").content
    entries = body.split(b"\n")
    assert b"instance-id" in entries
    assert b"placement/" in entries
    assert b"public-keys/" in entries
    assert entries == sorted(entries)
    assert not body.endswith(b"\n")


def test_directory_is_served_with_or_without_the_slash(emulator: Emulator) -> None:
    with_slash = imds_get(emulator, "/latest/meta-data/placement/")
    without = imds_get(emulator, "/latest/meta-data/placement")
    assert with_slash.status_code == without.status_code == 200
    assert with_slash.content == without.content
    assert with_slash.content == (
        b"availability-zone\navailability-zone-id\ngroup-name\npartition-number\nregion"
    )


def test_leaf_bytes_are_exact_with_matching_content_length(emulator: Emulator) -> None:
    response = imds_get(emulator, "/latest/meta-data/local-ipv4")
    assert response.content == b"172.31.40.12"
    assert response.headers["Content-Length"] == "12"
    assert response.headers["Content-Type"] == "text/plain"


def test_multi_valued_leaf_is_newline_separated_without_final_newline(emulator: Emulator) -> None:
    assert imds_get(emulator, "/latest/meta-data/security-groups").content == (
        b"default\nweb-servers"
    )


def test_json_leaf_is_jackson_style_text_plain(emulator: Emulator) -> None:
    response = imds_get(emulator, "/latest/meta-data/iam/info")
    assert response.headers["Content-Type"] == "text/plain"
    assert response.text.startswith('{\n  "Code" : "Success",\n  "LastUpdated" : ')
    assert response.text.endswith('"\n}')


def test_leaf_requested_with_a_trailing_slash_is_served(emulator: Emulator) -> None:
    with_slash = imds_get(emulator, "/latest/meta-data/instance-id/")
    assert with_slash.status_code == 200
    assert with_slash.content == emulator.get_bytes("meta-data/instance-id")


def test_user_data_is_raw_bytes_as_octet_stream(emulator: Emulator) -> None:
    for path in ("/latest/user-data", "/latest/user-data/"):
        response = imds_get(emulator, path)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.content.startswith(b"\x1f\x8b")  # gzip, served as is
        assert "Content-Encoding" not in response.headers
        assert int(response.headers["Content-Length"]) == len(response.content)


@pytest.mark.parametrize(
    "path",
    [
        "/latest/meta-data/no-such-thing",
        "/latest/meta-data/instance-id/below-a-leaf",
        "/latest/meta-data/spot/instance-action",
        "/latest/meta-data//instance-id",
        "/latest/nothing",
        "/1999-01-01/meta-data/instance-id",
        "/latest/meta-data/public-keys/0=imdsfs-demo-key/",
        "/latest/meta-data/public-keys/7/",
    ],
)
def test_unknown_path_is_the_exact_404_page(emulator: Emulator, path: str) -> None:
    response = imds_get(emulator, path)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "text/html"
    assert response.content == NOT_FOUND_PAGE
    assert len(response.content) == 339
    assert response.headers["Content-Length"] == "339"


def test_public_keys_list_index_names_and_resolve_by_index(emulator: Emulator) -> None:
    listing = imds_get(emulator, "/latest/meta-data/public-keys/").content
    assert listing == b"0=imdsfs-demo-key\n1=ops-team"
    assert imds_get(emulator, "/latest/meta-data/public-keys/1/").content == b"openssh-key"
    key = imds_get(emulator, "/latest/meta-data/public-keys/1/openssh-key").content
    assert key.startswith(b"ssh-rsa ")
    assert key.endswith(b" ops-team")


def test_role_names_and_tag_keys_are_listed_as_leaves(emulator: Emulator) -> None:
    roles = imds_get(emulator, "/latest/meta-data/iam/security-credentials/").content
    assert roles == b"imdsfs-demo-role"
    tags = imds_get(emulator, "/latest/meta-data/tags/instance").content
    assert tags == b"Environment\nName\nScratch\ncost-center"


def test_empty_tag_value_is_an_empty_200(emulator: Emulator) -> None:
    response = imds_get(emulator, "/latest/meta-data/tags/instance/Scratch")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Length"] == "0"


def test_version_paths_serve_the_same_data(emulator: Emulator) -> None:
    for path in ("meta-data/instance-id", "meta-data/", "dynamic/instance-identity/document"):
        versioned = imds_get(emulator, "/2021-03-23/" + path).content
        assert versioned == imds_get(emulator, "/latest/" + path).content


def test_query_string_is_ignored(emulator: Emulator) -> None:
    assert imds_get(emulator, "/latest/meta-data/instance-id?x=1").status_code == 200
    assert emulator.counters.paths() == ["/latest/meta-data/instance-id"]


def test_success_headers_match_real_imds(emulator: Emulator) -> None:
    response = imds_get(emulator, "/latest/meta-data/instance-id")
    headers = response.headers
    assert response.http_version == "HTTP/1.1"
    assert headers["Server"] == "EC2ws"
    assert headers["Connection"] == "close"
    assert headers["Accept-Ranges"] == "none"
    assert "ETag" not in headers
    assert email.utils.parsedate_to_datetime(headers["Date"]) is not None
    assert email.utils.parsedate_to_datetime(headers["Last-Modified"]) is not None
    names = [name.lower() for name, _ in headers.multi_items()]
    assert names[:3] == ["content-type", "accept-ranges", "last-modified"]
    assert names[-4:] == ["content-length", "date", "server", "connection"]


def test_last_modified_is_the_same_for_every_leaf(emulator: Emulator) -> None:
    first = imds_get(emulator, "/latest/meta-data/instance-id").headers["Last-Modified"]
    second = imds_get(emulator, "/latest/meta-data/mac").headers["Last-Modified"]
    assert first == second


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/latest/meta-data/instance-id", "text/plain"),
        ("/latest/user-data", "application/octet-stream"),
        ("/latest/meta-data/nope", "text/html"),
    ],
)
def test_head_has_the_get_headers_and_no_body(
    emulator: Emulator, path: str, content_type: str
) -> None:
    token = imds_token(emulator)
    get = imds_request(emulator, path, token=token)
    head = imds_request(emulator, path, method="HEAD", token=token)
    assert head.status_code == get.status_code
    assert head.content == b""
    assert head.headers["Content-Type"] == content_type
    assert head.headers["Content-Length"] == str(len(get.content))


@pytest.mark.parametrize("method", ["POST", "DELETE", "PATCH", "PUT", "OPTIONS"])
def test_other_methods_on_data_paths_are_405(emulator: Emulator, method: str) -> None:
    response = imds_request(emulator, "/latest/meta-data/instance-id", method=method)
    assert response.status_code == 405
    assert response.content == b""
    assert response.headers["Allow"] == "GET, HEAD"


def test_xff_is_403_on_data_and_token_paths(emulator: Emulator) -> None:
    xff = {"X-Forwarded-For": "10.0.0.9"}
    token = imds_token(emulator)
    data = imds_request(emulator, "/latest/meta-data/", token=token, headers=xff)
    put = imds_request(
        emulator,
        "/latest/api/token",
        method="PUT",
        token=False,
        headers={**xff, "X-aws-ec2-metadata-token-ttl-seconds": "60"},
    )
    for response in (data, put):
        assert response.status_code == 403
        assert response.content == b""
        assert response.headers["Content-Type"] == "text/plain"


def test_every_connection_is_closed_after_one_response(emulator: Emulator) -> None:
    with httpx.Client(trust_env=False) as client:
        token = client.put(
            emulator.url + "/latest/api/token",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        ).text
        for _ in range(3):
            response = client.get(
                emulator.url + "/latest/meta-data/ami-id",
                headers={"X-aws-ec2-metadata-token": token},
            )
            assert response.status_code == 200
            assert response.headers["Connection"] == "close"


async def test_many_concurrent_clients_are_all_served(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(tokens="optional")
    statuses: list[int] = []

    async def fetch(client: httpx.AsyncClient, index: int) -> None:
        path = "/latest/meta-data/" if index % 2 else "/latest/meta-data/instance-id"
        statuses.append((await client.get(emu.url + path)).status_code)

    limits = httpx.Limits(max_connections=200)
    client = httpx.AsyncClient(trust_env=False, timeout=10, limits=limits)
    async with client, trio.open_nursery() as nursery:
        for index in range(200):
            nursery.start_soon(fetch, client, index)
    assert statuses == [200] * 200
    assert emu.counters.count(method="GET", status=200) == 200


def test_client_disconnecting_mid_response_does_not_hurt_the_server(
    make_emulator: MakeEmulator,
) -> None:
    emu = make_emulator(tokens="optional")
    emu.set("user-data", b"x" * 4_000_000)  # large enough to still be sending when we leave
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", emu.port)) as raw:
            raw.sendall(b"GET /latest/user-data HTTP/1.1\r\nHost: x\r\n\r\n")
            raw.recv(100)
    assert imds_get(emu, "/latest/meta-data/instance-id", token=False).status_code == 200


def test_get_bytes_matches_what_http_serves(emulator: Emulator) -> None:
    for path in ("meta-data/", "meta-data/instance-id", "user-data", "", "dynamic"):
        assert emulator.get_bytes(path) == imds_get(emulator, "/latest/" + path).content
    with pytest.raises(KeyError):
        emulator.get_bytes("meta-data/nope")


def test_identity_document_is_consistent_with_meta_data(emulator: Emulator) -> None:
    document = json.loads(imds_get(emulator, "/latest/dynamic/instance-identity/document").text)
    meta = {
        "instanceId": "meta-data/instance-id",
        "imageId": "meta-data/ami-id",
        "instanceType": "meta-data/instance-type",
        "region": "meta-data/placement/region",
        "availabilityZone": "meta-data/placement/availability-zone",
        "privateIp": "meta-data/local-ipv4",
    }
    for key, path in meta.items():
        assert document[key] == emulator.get_bytes(path).decode(), key
