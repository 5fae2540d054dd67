"""The Azure IMDS emulator over real HTTP: its rules, its state, and real clients on it.

Requests go one emulator-second apart (a ``ManualClock``), so the 5-per-second limit only
bites in the tests about it.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from imdsfs.emulator import AzureEmulator, Faults, ManagedIdentity, ManualClock

from ..conftest import ImportCloudInit

V = "2021-02-01"
NEWEST = ["2025-04-07", "2024-07-17", "2024-03-15"]
META = {"Metadata": "true"}
_client = httpx.Client(trust_env=False)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def azure(clock: ManualClock) -> Iterator[AzureEmulator]:
    with AzureEmulator(clock=clock, seed=7) as emu:
        yield emu


def get(
    emu: AzureEmulator,
    target: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    clock: ManualClock | None = None,
) -> httpx.Response:
    """One request, ``Metadata: true`` unless ``headers`` say otherwise; with ``clock``, one
    emulator-second after the previous request."""
    if clock is not None:
        clock.advance(1.0)
    return _client.request(method, emu.url + target, headers=META if headers is None else headers)


def error(response: httpx.Response) -> Any:
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    return response.json()


# -- every request ------------------------------------------------------------------------


def test_url_is_the_server_root(azure: AzureEmulator) -> None:
    assert azure.url == f"http://127.0.0.1:{azure.port}"


def test_without_the_metadata_header_it_is_a_400(azure: AzureEmulator, clock: ManualClock) -> None:
    response = get(azure, f"/metadata/instance?api-version={V}", {}, clock=clock)
    assert response.status_code == 400
    assert response.content == b'{"error":"Bad request. Required metadata header not specified"}'
    false = get(azure, f"/metadata/instance?api-version={V}", {"Metadata": "false"}, clock=clock)
    assert false.status_code == 400


def test_the_metadata_header_value_is_compared_without_case(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    response = get(azure, f"/metadata/instance?api-version={V}", {"Metadata": "True"}, clock=clock)
    assert response.status_code == 200


@pytest.mark.parametrize("query", ["", "?api-version=2099-01-01", "?api-version=", "?format=json"])
def test_a_missing_or_unsupported_api_version_names_the_newest(
    azure: AzureEmulator, clock: ManualClock, query: str
) -> None:
    response = get(azure, f"/metadata/instance{query}", clock=clock)
    assert response.status_code == 400
    assert error(response) == {
        "error": "Bad request. api-version is invalid or was not specified in the request. "
        "For more information refer to aka.ms/azureimds",
        "newest-versions": NEWEST,
    }


def test_an_old_supported_api_version_is_served(azure: AzureEmulator, clock: ManualClock) -> None:
    response = get(azure, "/metadata/instance?api-version=2017-08-01", clock=clock)
    assert response.status_code == 200
    assert "userData" not in response.json()["compute"]


def test_an_older_imds_names_the_newest_versions_it_has(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    azure.newest_api_version = "2020-12-01"  # an IMDS that lags Azure's (Azure Stack Hub)
    for target in (
        f"/metadata/instance?api-version={V}",
        f"/metadata/attested/document?api-version={V}",
    ):
        response = get(azure, target, clock=clock)
        assert response.status_code == 400
        assert error(response)["newest-versions"] == ["2020-12-01", "2020-10-01", "2020-09-01"]
    for target in (
        "/metadata/instance?api-version=2020-12-01",
        "/metadata/scheduledevents?api-version=2020-07-01",  # its own list, all older
        "/metadata/identity/oauth2/token?api-version=2019-08-01&resource=https://x",  # not affected
    ):
        assert get(azure, target, clock=clock).status_code == 200, target
    azure.newest_api_version = None
    assert get(azure, f"/metadata/instance?api-version={V}", clock=clock).status_code == 200


def test_x_forwarded_for_is_refused(azure: AzureEmulator, clock: ManualClock) -> None:
    headers = {**META, "X-Forwarded-For": "10.0.0.9"}
    response = get(azure, f"/metadata/instance?api-version={V}", headers, clock=clock)
    assert response.status_code == 400
    assert "X-Forwarded-For" in error(response)["error"]


def test_duplicate_query_parameters_are_refused(azure: AzureEmulator, clock: ManualClock) -> None:
    response = get(azure, f"/metadata/instance?api-version={V}&api-version={V}", clock=clock)
    assert response.status_code == 400
    assert "Duplicate" in error(response)["error"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
def test_only_get_is_served(azure: AzureEmulator, clock: ManualClock, method: str) -> None:
    response = get(azure, f"/metadata/instance?api-version={V}", method=method, clock=clock)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


def test_unknown_paths_are_404(azure: AzureEmulator, clock: ManualClock) -> None:
    response = get(azure, f"/metadata/nothing?api-version={V}", clock=clock)
    assert response.status_code == 404
    assert error(response) == {"error": "Not found"}


# -- /metadata/instance -------------------------------------------------------------------


def test_the_whole_document_is_compact_json_with_azure_headers(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    response = get(azure, "/metadata/instance?api-version=2025-04-07", clock=clock)
    assert response.status_code == 200
    assert response.json() == azure.get_json()
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert "IMDS" in response.headers["server"]  # MSAL checks this
    assert len(response.headers["x-ms-request-id"]) == 36
    assert b'": ' not in response.content
    assert b'", ' not in response.content
    assert response.headers["content-length"] == str(len(response.content))


def test_the_packaged_document_is_a_realistic_vm(azure: AzureEmulator) -> None:
    compute = azure.get_json()["compute"]
    for key in ("azEnvironment", "location", "name", "osType", "vmId", "vmSize", "priority"):
        assert isinstance(compute[key], str), key
        assert compute[key], key
    assert compute["tags"] == ";".join(f"{t['name']}:{t['value']}" for t in compute["tagsList"])
    assert base64.b64decode(compute["userData"]).startswith(b"#cloud-config\n")
    nic = azure.get_json()["network"]["interface"][0]
    assert set(nic["ipv4"]["ipAddress"][0]) == {"privateIpAddress", "publicIpAddress"}


def test_a_leaf_with_format_text_is_its_bytes(azure: AzureEmulator, clock: ManualClock) -> None:
    url = f"/metadata/instance/compute/location?api-version={V}&format=text"
    response = get(azure, url, clock=clock)
    assert response.status_code == 200
    assert response.content == b"westeurope"  # no newline added
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_arrays_are_addressed_by_index(azure: AzureEmulator, clock: ManualClock) -> None:
    base = "/metadata/instance/network/interface"
    url = f"{base}/1/ipv4/ipAddress/1/privateIpAddress?api-version={V}&format=text"
    assert get(azure, url, clock=clock).content == b"10.0.2.5"
    for missing in ("/7/macAddress", "/x/macAddress", "/-1/macAddress"):
        url = f"{base}{missing}?api-version={V}&format=text"
        assert get(azure, url, clock=clock).status_code == 404


@pytest.mark.parametrize("fmt", ["", "&format=json"])
def test_a_leaf_without_format_text_is_a_400(
    azure: AzureEmulator, clock: ManualClock, fmt: str
) -> None:
    response = get(azure, f"/metadata/instance/compute/vmId?api-version={V}{fmt}", clock=clock)
    assert response.status_code == 400
    assert "format=text" in error(response)["error"]


def test_an_object_or_array_with_format_text_is_a_400(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    for path in ("", "/compute", "/compute/tagsList"):
        url = f"/metadata/instance{path}?api-version={V}&format=text"
        response = get(azure, url, clock=clock)
        assert response.status_code == 400, path
        assert "format=text" in error(response)["error"]


def test_a_subtree_is_json_with_or_without_a_trailing_slash(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    expected = azure.get_json(V)["network"]["interface"][0]
    for path in ("/network/interface/0", "/network/interface/0/"):
        response = get(azure, f"/metadata/instance{path}?api-version={V}", clock=clock)
        assert response.json() == expected


def test_an_unknown_format_is_a_400(azure: AzureEmulator, clock: ManualClock) -> None:
    response = get(azure, f"/metadata/instance?api-version={V}&format=xml", clock=clock)
    assert response.status_code == 400


def test_fields_appear_by_api_version(azure: AzureEmulator, clock: ManualClock) -> None:
    def status(version: str, path: str) -> int:
        url = f"/metadata/instance/compute/{path}?api-version={version}&format=text"
        return get(azure, url, clock=clock).status_code

    assert status("2020-12-01", "userData") == 404
    assert status("2021-01-01", "userData") == 200
    assert "tagsList" not in azure.get_json("2019-06-01")["compute"]
    assert "tagsList" in azure.get_json("2019-06-04")["compute"]
    disk = azure.get_json("2021-02-01")["compute"]["storageProfile"]["dataDisks"][0]
    assert "isUltraDisk" not in disk
    assert "lun" in disk


def test_extended_is_added_on_request_from_2021_03_01(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    url = "/metadata/instance?api-version={}&extended=true"
    assert get(azure, url.format("2021-08-01"), clock=clock).json()["extended"] == {
        "compute": {"ppsType": "None"}
    }
    assert "extended" not in get(azure, url.format("2021-02-01"), clock=clock).json()
    assert "extended" not in get(azure, f"/metadata/instance?api-version={V}", clock=clock).json()


def test_versions_needs_no_api_version(azure: AzureEmulator, clock: ManualClock) -> None:
    versions = get(azure, "/metadata/versions", clock=clock).json()["apiVersions"]
    assert versions[0] == "2017-03-01"
    assert versions[-1] == "2025-04-07"
    assert versions == sorted(versions)


# -- changing the document ----------------------------------------------------------------


def test_set_and_delete_show_on_the_next_request(azure: AzureEmulator, clock: ManualClock) -> None:
    azure.set("compute/tags", "Team:storage")
    url = f"/metadata/instance/compute/tags?api-version={V}&format=text"
    assert get(azure, url, clock=clock).content == b"Team:storage"
    azure.delete("compute/tags")
    assert get(azure, url, clock=clock).status_code == 404
    azure.set("network/interface/2", {"macAddress": "6045BDF1C6E7"})
    assert azure.leaf_text("network/interface/2/macAddress") == b"6045BDF1C6E7"
    azure.delete("network/interface/0")
    assert azure.leaf_text("network/interface/0/macAddress") == b"6045BDF1B4D5"


def test_set_and_delete_refuse_bad_paths(azure: AzureEmulator) -> None:
    with pytest.raises(ValueError, match="compute/ or network/"):
        azure.set("elsewhere/x", "1")
    with pytest.raises(ValueError, match="is a leaf"):
        azure.set("compute/location/x", "1")
    with pytest.raises(KeyError):
        azure.delete("compute/nothing")
    with pytest.raises(KeyError):
        azure.set("network/interface/9", {})


def test_numbers_booleans_and_null_render_as_json_text(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    for value, text in ((3, b"3"), (1.5, b"1.5"), (True, b"true"), (False, b"false"), (None, b"")):
        azure.set("compute/platformFaultDomain", value)
        url = f"/metadata/instance/compute/platformFaultDomain?api-version={V}&format=text"
        assert get(azure, url, clock=clock).content == text
        assert azure.leaf_text("compute/platformFaultDomain") == text


def test_leaf_text_refuses_objects_and_absent_paths(azure: AzureEmulator) -> None:
    with pytest.raises(KeyError):
        azure.leaf_text("compute")
    with pytest.raises(KeyError):
        azure.leaf_text("compute/nothing")


def test_leaves_are_what_format_text_serves(azure: AzureEmulator) -> None:
    azure.rate_limit = 10_000  # one request per leaf, at full speed
    leaves = azure.leaves()
    assert leaves["compute/location"] == b"westeurope"
    assert leaves["network/interface/0/ipv4/ipAddress/0/publicIpAddress"] == b"20.61.118.42"
    assert len(leaves) > 80
    for path, text in leaves.items():
        response = get(azure, f"/metadata/instance/{path}?api-version=2025-04-07&format=text")
        assert (response.status_code, response.content) == (200, text), path


def test_the_callers_document_is_copied() -> None:
    document = AzureEmulator().get_json()
    emu = AzureEmulator(document)
    emu.set("compute/location", "elsewhere")
    assert document["compute"]["location"] == "westeurope"


# -- scheduled events ---------------------------------------------------------------------


def events(emu: AzureEmulator, clock: ManualClock, version: str = "2020-07-01") -> Any:
    response = get(emu, f"/metadata/scheduledevents?api-version={version}", clock=clock)
    assert response.status_code == 200
    return response.json()


def test_no_events_at_first(azure: AzureEmulator, clock: ManualClock) -> None:
    assert events(azure, clock) == {"DocumentIncarnation": 1, "Events": []}


def test_a_scheduled_event_appears_when_due_and_bumps_the_incarnation(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    event_id = azure.schedule_event(after=30, event_type="Reboot")
    assert events(azure, clock)["Events"] == []
    clock.advance(30)
    document = events(azure, clock)
    assert document["DocumentIncarnation"] == 2
    [event] = document["Events"]
    assert event["EventId"] == event_id
    assert event["EventType"] == "Reboot"
    assert event["EventStatus"] == "Scheduled"
    assert event["ResourceType"] == "VirtualMachine"
    assert event["Resources"] == ["imdsfs-demo-vm"]
    assert event["EventSource"] == "Platform"
    assert event["DurationInSeconds"] == -1
    not_before = parsedate_to_datetime(event["NotBefore"])
    assert 14 * 60 <= (not_before - datetime.now(UTC)).total_seconds() <= 15 * 60 + 5
    assert event["NotBefore"].endswith(" GMT")


def test_started_and_completed_events_change_the_document(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    event_id = azure.schedule_event(event_type="Freeze")
    azure.start_event(event_id)
    [event] = events(azure, clock)["Events"]
    assert (event["EventStatus"], event["NotBefore"], event["DurationInSeconds"]) == (
        "Started",
        "",
        5,
    )
    assert azure.document_incarnation == 3
    azure.complete_event(event_id)
    assert events(azure, clock) == {"DocumentIncarnation": 4, "Events": []}
    with pytest.raises(KeyError):
        azure.complete_event(event_id)


def test_event_fields_follow_the_events_api_version(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    azure.schedule_event(event_type="Preempt")
    [old] = events(azure, clock, "2019-01-01")["Events"]
    assert "Description" not in old
    assert "EventSource" not in old
    [newer] = events(azure, clock, "2019-08-01")["Events"]
    assert "EventSource" in newer
    assert "DurationInSeconds" not in newer
    assert events(azure, clock, "2017-08-01")["Events"] == []  # Preempt came in 2017-11-01


def test_scheduled_events_have_their_own_api_versions(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    response = get(azure, f"/metadata/scheduledevents?api-version={V}", clock=clock)
    assert response.status_code == 400
    assert error(response)["newest-versions"] == ["2020-07-01", "2019-08-01", "2019-04-01"]


def test_schedule_event_refuses_unknown_types(azure: AzureEmulator) -> None:
    with pytest.raises(ValueError, match="event_type"):
        azure.schedule_event(event_type="Explode")


# -- attested document --------------------------------------------------------------------


def test_the_attested_document_is_pkcs7_holding_the_vm_facts(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    url = "/metadata/attested/document?api-version=2021-02-01&nonce=1234567890"
    body = get(azure, url, clock=clock).json()
    assert body["encoding"] == "pkcs7"
    der = base64.b64decode(body["signature"], validate=True)
    assert der[0] == 0x30  # a DER SEQUENCE: PKCS#7 ContentInfo
    start = der.index(b'{"nonce"')
    document, _ = json.JSONDecoder().raw_decode(der[start:].decode(errors="replace"))
    assert document["nonce"] == "1234567890"
    assert document["vmId"] == azure.get_json()["compute"]["vmId"]
    assert document["subscriptionId"] == azure.get_json()["compute"]["subscriptionId"]
    if shutil.which("openssl"):
        parsed = subprocess.run(
            ["openssl", "pkcs7", "-inform", "DER", "-print"], input=der, capture_output=True
        )
        assert parsed.returncode == 0, parsed.stderr
        assert b"pkcs7-signedData" in parsed.stdout


# -- managed identity ---------------------------------------------------------------------

TOKEN = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"


def test_a_token_has_the_managed_identity_shape(azure: AzureEmulator, clock: ManualClock) -> None:
    response = get(azure, TOKEN, clock=clock)
    assert response.status_code == 200
    token = response.json()
    assert set(token) == {
        "access_token",
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    }
    assert all(isinstance(value, str) for value in token.values())
    assert token["resource"] == "https://vault.azure.net"
    assert token["token_type"] == "Bearer"
    assert abs(int(token["expires_on"]) - time.time() - 86400) < 60
    _, claims, _ = token["access_token"].split(".")
    payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert payload["aud"] == "https://vault.azure.net"
    assert payload["appid"] == token["client_id"]
    assert token["access_token"] in azure.issued_tokens()


def test_a_token_is_reused_and_counts_down_until_bypassed(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    first = get(azure, TOKEN, clock=clock).json()
    clock.advance(100)
    again = get(azure, TOKEN, clock=clock).json()
    assert again["access_token"] == first["access_token"]
    assert int(first["expires_in"]) - int(again["expires_in"]) == 101
    fresh = get(azure, TOKEN + "&bypass_cache=true", clock=clock).json()
    assert fresh["access_token"] != first["access_token"]


def test_identities_are_chosen_by_client_object_or_resource_id(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    user = next(i for i in azure.identities if not i.system_assigned)
    for query in (
        f"client_id={user.client_id}",
        f"object_id={user.object_id}",
        f"msi_res_id={user.resource_id.upper()}",
    ):
        token = get(azure, f"{TOKEN}&{query}", clock=clock).json()
        assert token["client_id"] == user.client_id, query


@pytest.mark.parametrize(
    ("query", "headers", "status", "expected"),
    [
        ("&client_id=nobody", META, 400, ["invalid_request", "Identity not found"]),
        ("", {}, 400, ["bad_request_102", "Required metadata header not specified"]),
        (
            "",
            {"Metadata": "True"},
            400,
            ["bad_request_102", "Required metadata header not specified"],
        ),
        ("&client_id=a&object_id=b", META, 400, ["invalid_request", None]),
    ],
)
def test_token_errors_are_oauth_shaped(
    azure: AzureEmulator,
    clock: ManualClock,
    query: str,
    headers: dict[str, str],
    status: int,
    expected: list[str | None],
) -> None:
    response = get(azure, TOKEN + query, headers, clock=clock)
    assert response.status_code == status
    body = error(response)
    assert body["error"] == expected[0]
    if expected[1] is not None:
        assert body["error_description"] == expected[1]


def test_a_token_needs_a_resource_and_an_api_version(
    azure: AzureEmulator, clock: ManualClock
) -> None:
    no_resource = get(azure, "/metadata/identity/oauth2/token?api-version=2018-02-01", clock=clock)
    assert error(no_resource)["error_description"] == (
        "Required query variable 'resource' is missing"
    )
    no_version = get(azure, "/metadata/identity/oauth2/token?resource=x", clock=clock)
    assert no_version.status_code == 400
    assert error(no_version)["error"] == "invalid_request"


def test_a_vm_without_identities_has_no_tokens(azure: AzureEmulator, clock: ManualClock) -> None:
    azure.identities = []
    response = get(azure, TOKEN, clock=clock)
    assert response.status_code == 400
    assert error(response)["error_description"] == "Identity not found"
    info = get(azure, "/metadata/identity/info?api-version=2018-02-01", clock=clock)
    assert info.json() == {"tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47"}


# -- the rate limit -----------------------------------------------------------------------


def test_six_quick_requests_get_one_429(azure: AzureEmulator) -> None:
    statuses = [get(azure, "/metadata/versions").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    assert azure.throttled == 1
    assert azure.counters.count(status=429) == 1


def test_a_429_says_when_to_retry(azure: AzureEmulator, clock: ManualClock) -> None:
    for _ in range(5):
        get(azure, "/metadata/versions")
    clock.advance(0.25)
    response = get(azure, "/metadata/versions")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert error(response) == {"error": "Too many requests"}
    clock.advance(0.75)  # the first five leave the window
    assert get(azure, "/metadata/versions").status_code == 200


def test_spaced_requests_are_never_throttled(azure: AzureEmulator, clock: ManualClock) -> None:
    for _ in range(20):
        clock.advance(0.21)
        assert get(azure, "/metadata/versions").status_code == 200
    assert azure.throttled == 0


def test_the_limit_holds_on_the_real_clock() -> None:
    with AzureEmulator() as emu:
        quick = [get(emu, "/metadata/versions").status_code for _ in range(6)]
        assert quick.count(429) == 1
        emu.reset_rate_limit()
        for _ in range(6):
            assert get(emu, "/metadata/versions").status_code == 200
            time.sleep(0.21)


def test_tokens_have_their_own_limit_of_20(azure: AzureEmulator) -> None:
    for _ in range(5):
        assert get(azure, "/metadata/versions").status_code == 200
    statuses = [get(azure, TOKEN).status_code for _ in range(21)]
    assert statuses == [200] * 20 + [429]
    assert get(azure, "/metadata/versions").status_code == 429


# -- lifecycle, faults, hostile answers -----------------------------------------------------


def test_faults_apply_and_can_be_replaced(azure: AzureEmulator, clock: ManualClock) -> None:
    azure.faults.fail_next(1, status=410, path="/metadata/instance")
    url = f"/metadata/instance?api-version={V}"
    assert get(azure, url, clock=clock).status_code == 410
    assert get(azure, url, clock=clock).status_code == 200
    azure.faults = Faults(error_rate=1.0)
    assert get(azure, url, clock=clock).status_code == 500
    assert azure.counters.count(path="/metadata/instance") == 3


def test_set_raw_answers_before_every_rule(azure: AzureEmulator, clock: ManualClock) -> None:
    azure.set_raw("/metadata/instance", b"<html>proxy</html>", content_type="text/html")
    response = get(azure, "/metadata/instance", {}, clock=clock)
    assert (response.status_code, response.content) == (200, b"<html>proxy</html>")
    azure.clear_raw()
    assert get(azure, "/metadata/instance", {}, clock=clock).status_code == 400


def test_identities_can_be_given() -> None:
    only = ManagedIdentity("c-1", "o-1", resource_id="/x/y")
    with AzureEmulator(identities=[only]) as emu:
        token = get(emu, TOKEN).json()
        assert token["client_id"] == "c-1"  # the only identity needs no selector


async def test_async_with_starts_and_stops() -> None:
    async with AzureEmulator() as emu, httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(emu.url + "/metadata/versions", headers=META)
    assert response.status_code == 200
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(trust_env=False) as client:
            await client.get(emu.url + "/metadata/versions", headers=META)


# -- real clients ---------------------------------------------------------------------------


@pytest.mark.usefixtures("loopback_only")
def test_cloud_init_fetches_the_instance_document(
    azure: AzureEmulator, monkeypatch: pytest.MonkeyPatch, import_cloud_init: ImportCloudInit
) -> None:
    document = fetch_with_cloud_init(azure, monkeypatch, import_cloud_init)
    assert document["compute"]["vmId"] == azure.get_json()["compute"]["vmId"]
    assert document["compute"]["userData"] == azure.get_json()["compute"]["userData"]
    assert document["network"] == azure.get_json()["network"]


@pytest.mark.usefixtures("loopback_only")
def test_cloud_init_falls_back_when_its_api_version_is_refused(
    azure: AzureEmulator, monkeypatch: pytest.MonkeyPatch, import_cloud_init: ImportCloudInit
) -> None:
    document = fetch_with_cloud_init(azure, monkeypatch, import_cloud_init, want="2099-01-01")
    assert document["compute"]["vmId"] == azure.get_json()["compute"]["vmId"]
    assert "userData" not in document["compute"]  # 2019-06-01, cloud-init's fallback
    assert azure.counters.count(status=400) == 1


def fetch_with_cloud_init(
    emu: AzureEmulator,
    monkeypatch: pytest.MonkeyPatch,
    cloudinit: ImportCloudInit,
    want: str | None = None,
) -> Any:
    """cloud-init's own IMDS fetch with its api-version fallback, its IMDS address (a module
    constant) pointed at the emulator: ``azure.imds.fetch_metadata_with_api_fallback`` where
    cloud-init has it (23.1 on), ``DataSourceAzure.get_imds_data_with_api_fallback`` before."""
    azure_ds = cloudinit("cloudinit.sources.DataSourceAzure")  # skips without cloud-init
    try:
        imds = cloudinit("cloudinit.sources.azure.imds")
    except ModuleNotFoundError:
        imds = None
    if imds is not None:
        monkeypatch.setattr(imds, "IMDS_URL", emu.url + "/metadata")
        if want is not None:
            pytest.skip("this cloud-init's fallback versions are fixed in the URL")
        return imds.fetch_metadata_with_api_fallback(retry_deadline=time.monotonic() + 5)
    from enum import Enum

    rebased = Enum(  # type: ignore[misc]
        "MetadataType",
        {
            m.name: m.value.replace(azure_ds.IMDS_URL, emu.url + "/metadata")
            for m in azure_ds.MetadataType
        },
    )
    monkeypatch.setattr(azure_ds, "MetadataType", rebased)
    if want is not None:
        monkeypatch.setattr(azure_ds, "IMDS_VER_WANT", want)
    source = object.__new__(azure_ds.DataSourceAzure)  # the method needs no instance state
    return azure_ds.DataSourceAzure.get_imds_data_with_api_fallback(
        source, retries=0, md_type=rebased.ALL
    )


@pytest.mark.usefixtures("loopback_only")
def test_azure_identity_gets_tokens_from_the_emulator(
    azure: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = pytest.importorskip("azure.identity")
    for name in (
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "IDENTITY_SERVER_THUMBPRINT",
        "IMDS_ENDPOINT",
        "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    # azure-identity's (and MSAL's) documented override of the IMDS address.
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", azure.url)
    credential = identity.ManagedIdentityCredential()
    token = credential.get_token("https://vault.azure.net/.default")
    assert token.token in azure.issued_tokens()
    assert abs(token.expires_on - time.time() - 86400) < 60
    user = next(i for i in azure.identities if not i.system_assigned)
    chosen = identity.ManagedIdentityCredential(client_id=user.client_id)
    user_token = chosen.get_token("https://storage.azure.com/.default").token
    claims = user_token.split(".")[1]
    payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert payload["appid"] == user.client_id
    assert payload["aud"] == "https://storage.azure.com"


@pytest.mark.usefixtures("loopback_only")
def test_azure_identity_reports_a_vm_without_identity_as_unavailable(
    azure: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = pytest.importorskip("azure.identity")
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", azure.url)
    for name in ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    azure.identities = []
    with pytest.raises(identity.CredentialUnavailableError, match="Identity not found"):
        identity.ManagedIdentityCredential().get_token("https://vault.azure.net/.default")
