"""The Azure provider: its URLs, endpoint, secrets, TTLs and api-versions; the document as
files; and, over real HTTP to the emulator, the cache reading the whole document in one
request, whatever path is asked for, whenever it is refreshed."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
import trio.testing

from imdsfs import ClientConfig, ImdsClient, MetadataCache, NotFound, TtlPolicy, Unavailable
from imdsfs._azure_tree import leaf_text
from imdsfs.emulator import AzureEmulator, ManualClock
from imdsfs.providers.azure import PINNED, AzureProvider, files_from_document

AZURE = AzureProvider(ClientConfig(provider="azure", endpoint="http://az.test"), environ={})
V = PINNED["instance"]
DOCUMENT_URL = "/metadata/instance/"  # what the emulator's counters record


# -- the provider ---------------------------------------------------------------------------


def test_urls_are_azures_path_addressing() -> None:
    provider = AzureProvider(ClientConfig(provider="azure", endpoint="http://az.test"), {})
    assert provider.url("instance/compute/vmId") == (
        f"http://az.test/metadata/instance/compute/vmId?api-version={V}&format=text"
    )
    assert provider.url("instance/network/interface/0/") == (
        f"http://az.test/metadata/instance/network/interface/0/?api-version={V}&format=json"
    )
    assert provider.url("scheduledevents") == (
        "http://az.test/metadata/scheduledevents?api-version=2020-07-01"
    )
    assert provider.url("attested/document") == (
        f"http://az.test/metadata/attested/document?api-version={V}"
    )


def test_the_endpoint_is_the_flag_else_the_well_known_address() -> None:
    """Azure's SDK variables move the identity token endpoint (or Arc's agent), not IMDS."""
    environ = {
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://10.0.0.1:2579",
        "IMDS_ENDPOINT": "http://localhost:40342",
    }
    config = ClientConfig(provider="azure")
    assert AzureProvider.resolve_endpoint(config, environ) == "http://169.254.169.254"
    flagged = ClientConfig(provider="azure", endpoint="http://127.0.0.1:8080/")
    assert AzureProvider.resolve_endpoint(flagged, environ) == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    "path",
    [
        "user-data",
        "instance/compute/userData",
        "instance/compute/customData",
        "attested/document",
        # Should a service send them as objects or arrays, what they hold is as secret.
        "instance/compute/userData/token",
        "instance/compute/customData/0",
    ],
)
def test_user_data_and_the_attested_document_are_secret(path: str) -> None:
    assert AZURE.secrets.is_secret(path)


@pytest.mark.parametrize(
    "path",
    [
        "scheduledevents",
        "instance/compute/tags",
        "instance/compute/osProfile/adminUsername",
        "instance/compute/publicKeys/0/keyData",
        "instance/network/interface/0/macAddress",
    ],
)
def test_the_rest_is_not(path: str) -> None:
    assert not AZURE.secrets.is_secret(path)


@pytest.mark.parametrize(
    ("path", "seconds"),
    [
        ("scheduledevents", 5),
        ("instance/compute/tags", 5),
        ("instance/compute/tagsList/", 5),
        ("instance/compute/tagsList/0/value", 5),
        ("instance/compute/vmId", 6 * 3600),
        ("instance/compute/storageProfile/imageReference/sku", 6 * 3600),
        ("instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress", 60),
        ("instance/compute/", 60),
        ("user-data", 60),
    ],
)
def test_ttls_follow_how_often_a_value_changes(path: str, seconds: float) -> None:
    assert TtlPolicy(builtin=AZURE.ttl_rules).ttl(path) == seconds


def test_a_refused_api_version_is_replaced_by_the_newest_the_service_names() -> None:
    provider = AzureProvider(ClientConfig(provider="azure", endpoint="http://az.test"), {})
    refused = provider.url("instance/")
    body = json.dumps({"error": "Bad request.", "newest-versions": ["2020-12-01", "2020-10-01"]})
    assert provider.renegotiate(refused, body.encode())
    assert "api-version=2020-12-01" in provider.url("instance/compute/vmId")
    assert "api-version=2020-12-01" in provider.url("user-data")  # the document's, too
    assert provider.renegotiate(refused, body.encode())  # a concurrent refusal: already done
    assert "api-version=2020-12-01" in provider.url("instance/")
    assert "api-version=2020-07-01" in provider.url("scheduledevents")  # its own


@pytest.mark.parametrize(
    "body",
    [
        b'{"error":"Bad request. Required metadata header not specified"}',
        b"<html>400</html>",
        json.dumps({"error": "x", "newest-versions": [V]}).encode(),  # it has ours: not that
        json.dumps({"error": "x", "newest-versions": ["latest; drop"]}).encode(),
        # Digits of another script are digits to \\d, not to Azure.
        json.dumps({"error": "x", "newest-versions": ["\u0662\u0660\u0662\u0664-01-01"]}).encode(),
    ],
)
def test_a_400_for_another_reason_is_not_renegotiated(body: bytes) -> None:
    provider = AzureProvider(ClientConfig(provider="azure", endpoint="http://az.test"), {})
    assert not provider.renegotiate(provider.url("instance/"), body)
    assert f"api-version={V}" in provider.url("instance/")


def test_every_path_but_events_and_attested_is_read_from_the_document() -> None:
    for path in ("", "instance/", "instance/compute/vmId", "user-data", "attested/"):
        bulk = AZURE.bulk(path)
        assert bulk is not None
        assert (bulk.source, bulk.query, bulk.always) == ("instance/", "", True)
    assert AZURE.bulk("scheduledevents") is None
    assert AZURE.bulk("attested/document") is None


# -- the document as files ------------------------------------------------------------------


def document(**compute: Any) -> bytes:
    return json.dumps({"compute": compute, "network": {"interface": []}}).encode()


def test_objects_are_directories_in_document_order_and_arrays_of_indexes() -> None:
    body = document(name="vm1", tagsList=[{"name": "a", "value": "1"}], zone="", subnets=["x", "y"])
    files = files_from_document(body)
    assert files["instance/"] == b"compute/\nnetwork/\n"
    assert files["instance/compute/"] == b"name\ntagsList/\nzone\nsubnets/\n"
    assert files["instance/compute/tagsList/"] == b"0/\n"
    assert files["instance/compute/tagsList/0/"] == b"name\nvalue\n"
    assert files["instance/compute/tagsList/0/value"] == b"1"
    assert files["instance/compute/subnets/"] == b"0\n1\n"
    assert files["instance/compute/subnets/1"] == b"y"
    assert files["instance/compute/zone"] == b""
    assert files["instance/network/interface/"] == b""


def test_a_scalar_holds_what_format_text_returns() -> None:
    assert [leaf_text(v) for v in ("Ünï", "", 5, 1.5, True, False, None)] == [
        "Ünï".encode(),
        b"",
        b"5",
        b"1.5",
        b"true",
        b"false",
        b"",
    ]


def test_user_data_is_decoded() -> None:
    raw = b"#!/bin/sh\n\x00\xff binary too"
    files = files_from_document(document(userData=base64.b64encode(raw).decode()))
    assert files["user-data"] == raw


@pytest.mark.parametrize("user_data", ["", "not base64!", None])
def test_without_user_data_there_is_no_user_data_file(user_data: str | None) -> None:
    files = files_from_document(document(userData=user_data))
    assert "user-data" not in files


def test_the_root_and_attested_are_listed_without_the_document() -> None:
    """So a document that cannot be read hides nothing but itself (user-data is a root
    extra: shown when the document has it)."""
    assert AZURE.known("") == b"attested/\ninstance/\nscheduledevents\n"
    assert AZURE.known("attested/") == b"document\n"
    assert AZURE.known("instance/") is None
    assert [entry.path for entry in AZURE.root_extras] == ["user-data"]


def test_a_string_utf8_cannot_hold_is_left_out_not_the_document() -> None:
    files = files_from_document(document(bad="\ud800", **{"\udc00key": "x", "ok": "z"}))
    assert files["instance/compute/"].endswith(b"ok\n")
    assert not [path for path in files if path.endswith(("bad", "key"))]


def test_a_document_with_more_paths_than_a_mount_shows_is_unreadable() -> None:
    with pytest.raises(ValueError, match="more than 20000 paths"):
        files_from_document(document(tags=list(range(400_000))))


def test_a_document_nested_past_what_json_can_walk_is_unreadable() -> None:
    with pytest.raises(ValueError, match="nested too deep"):
        files_from_document(b'{"compute": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def test_a_key_that_cannot_be_one_listing_line_is_left_out() -> None:
    files = files_from_document(document(**{"a/b": "x", "two\nlines": {"c": "y"}, "ok": "z"}))
    assert files["instance/compute/"] == b"ok\n"
    assert not [path for path in files if "a/b" in path or "lines" in path]


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"\xff"])
def test_an_answer_that_is_no_json_object_is_unreadable(body: bytes) -> None:
    with pytest.raises(ValueError):
        files_from_document(body)


# -- over HTTP: one request for the whole document ------------------------------------------


@pytest.fixture
def azure() -> AzureEmulator:
    with AzureEmulator(clock=ManualClock()) as emu:  # its 5/s window never moves on its own
        emu.rate_limit = 1000  # the client's own limit is what these tests are about
        yield emu


MakeCache = Callable[..., MetadataCache]


@pytest.fixture
async def make_cache(azure: AzureEmulator) -> AsyncIterator[MakeCache]:
    clients: list[ImdsClient] = []

    def make(*rules: str, **config: Any) -> MetadataCache:
        settings = ClientConfig(provider="azure", endpoint=azure.url, backoff_base=0.0, **config)
        client = ImdsClient(settings, environ={})
        clients.append(client)
        policy = TtlPolicy.from_rules(rules, builtin=client.provider.ttl_rules)
        return MetadataCache(client, policy, holdoff=0.0)

    yield make
    for client in clients:
        await client.aclose()


def documents(emu: AzureEmulator) -> int:
    return emu.counters.count(path=DOCUMENT_URL)


async def test_every_leaf_is_read_from_one_request(
    azure: AzureEmulator, make_cache: MakeCache
) -> None:
    cache = make_cache()
    leaves = azure.leaves(V)
    read: dict[str, bytes] = {}

    async def get(path: str) -> None:
        read[path] = (await cache.get(f"instance/{path}")).body

    async with trio.open_nursery() as nursery:
        for path in leaves:
            nursery.start_soon(get, path)
    assert read == leaves
    assert azure.counters.paths() == [DOCUMENT_URL]
    assert azure.counters.count(status=200) == 1  # with its header and api-version


async def test_a_path_the_document_lacks_is_not_found_without_a_request_of_its_own(
    azure: AzureEmulator, make_cache: MakeCache
) -> None:
    azure.set("compute/userData", "")
    cache = make_cache()
    with pytest.raises(NotFound):
        await cache.get("user-data")
    with pytest.raises(NotFound):
        await cache.get("user-data")  # remembered a while, as any 404
    assert azure.counters.paths() == [DOCUMENT_URL]


async def test_an_expired_value_is_refreshed_with_the_whole_document(
    azure: AzureEmulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache()
    tags = (await cache.get("instance/compute/tags")).body
    vm_id = await cache.get("instance/compute/vmId")
    azure.set("compute/tags", "Team:storage")
    mock_clock.jump(4.9)
    assert (await cache.get("instance/compute/tags")).body == tags
    mock_clock.jump(0.2)  # past the 5 s of tags (and tagsList), long before vmId's 6 h
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.get, "instance/compute/tags")
        nursery.start_soon(cache.get, "instance/compute/tagsList/")
    assert (await cache.get("instance/compute/tags")).body == b"Team:storage"
    assert documents(azure) == 2  # both expired paths, one request
    refreshed = await cache.get("instance/compute/vmId")
    assert (refreshed.source, refreshed.body) == ("cache", vm_id.body)
    assert refreshed.fetched_at > vm_id.fetched_at  # its TTL starts again too


async def test_an_unreadable_document_fails_the_read_and_the_last_good_value_stands(
    azure: AzureEmulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    warm, cold = make_cache(), make_cache()
    tags = (await warm.get("instance/compute/tags")).body
    azure.set_raw(DOCUMENT_URL, b"<<not json>>")
    with pytest.raises(Unavailable, match="unreadable"):
        await cold.get("instance/compute/vmSize")
    mock_clock.jump(6)  # past the TTL of tags
    stale = await warm.get("instance/compute/tags")
    assert (stale.source, stale.body) == ("stale", tags)
    assert documents(azure) == 3


async def test_a_refused_api_version_falls_back_to_the_newest_the_service_has(
    azure: AzureEmulator, make_cache: MakeCache
) -> None:
    azure.newest_api_version = "2020-12-01"
    cache = make_cache()
    assert (await cache.get("instance/compute/vmId")).body == azure.leaf_text("compute/vmId")
    assert (await cache.get("instance/compute/location")).body == b"westeurope"
    with pytest.raises(NotFound):  # userData came with 2021-01-01
        await cache.get("user-data")
    assert (await cache.get("attested/document")).body.startswith(b'{"encoding":"pkcs7"')
    assert (await cache.get("scheduledevents")).body.startswith(b'{"DocumentIncarnation"')
    # One refusal each for the document and the attested document; events' 2020-07-01 is old.
    assert azure.counters.count(status=400) == 2
    assert azure.counters.paths().count(DOCUMENT_URL) == 3  # user-data is absent: asked again
