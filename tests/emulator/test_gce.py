"""The GCE metadata server emulator over real HTTP: its wire format, tokens, scenarios, faults,
the Python API and ``imdsfs emulate --provider gce``. Long-polls: test_gce_long_poll.py; real
clients (google-auth, cloud-init): test_gce_clients.py."""

from __future__ import annotations

import base64
import email.utils
import json
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from imdsfs.emulator import DocumentError, Faults, GceDocument, GceEmulator, ManualClock

from ..conftest import GCE_ROOT, MakeGceEmulator, gce_request

SA = "imdsfs-demo-sa@imdsfs-demo-project.iam.gserviceaccount.com"
ETAG = re.compile(r"[0-9a-f]{16}")


def get(emu: GceEmulator, path: str, **kwargs: object) -> httpx.Response:
    return gce_request(emu, path, **kwargs)  # type: ignore[arg-type]


# -- listings and leaves ----------------------------------------------------------------------


def test_root_lists_the_versions_as_captured_without_an_etag(gce_emulator: GceEmulator) -> None:
    response = get(gce_emulator, "/")
    assert response.status_code == 200
    assert response.content == b"0.1/\ncomputeMetadata/\n"
    assert response.headers["Content-Length"] == "22"  # as in the 2019 capture
    assert response.headers["Content-Type"] == "application/text"
    assert "ETag" not in response.headers


def test_listings_end_every_line_in_a_newline_and_mark_directories(
    gce_emulator: GceEmulator,
) -> None:
    assert get(gce_emulator, "").content == b"instance/\noauth/\nproject/\nuniverse/\n"
    body = get(gce_emulator, "instance/").content
    assert body.endswith(b"\n")
    entries = body.decode().split("\n")[:-1]
    assert entries == sorted(entries)
    for directory in ("attributes/", "disks/", "network-interfaces/", "service-accounts/"):
        assert directory in entries
    for leaf in ("id", "zone", "machine-type", "maintenance-event", "preempted", "tags"):
        assert leaf in entries
    assert get(gce_emulator, "project/").content == (
        b"attributes/\nnumeric-project-id\nproject-id\n"
    )
    assert get(gce_emulator, "oauth/").content == b""  # an empty directory: an empty body


def test_list_directories_are_indexes_and_accounts_list_their_minted_endpoints(
    gce_emulator: GceEmulator,
) -> None:
    assert get(gce_emulator, "instance/disks/").content == b"0/\n1/\n"
    assert get(gce_emulator, "instance/network-interfaces/0/ip-aliases/").content == b"0\n"
    assert get(gce_emulator, "instance/service-accounts/").content == f"default/\n{SA}/\n".encode()
    assert get(gce_emulator, f"instance/service-accounts/{SA}/").content == (
        b"aliases\nemail\nidentity\nscopes\ntoken\n"
    )


def test_leaves_are_their_bytes_with_nothing_added(gce_emulator: GceEmulator) -> None:
    zone = get(gce_emulator, "instance/zone")
    assert zone.content == b"projects/824706217453/zones/us-central1-a"
    assert zone.headers["Content-Type"] == "application/text"
    assert get(gce_emulator, "instance/id").content == b"4520031799277581759"
    assert get(gce_emulator, "instance/network-interfaces/0/mtu").content == b"1460"
    assert get(gce_emulator, "universe/universe-domain").content == b"googleapis.com"
    assert get(gce_emulator, "instance/maintenance-event").content == b"NONE"
    assert get(gce_emulator, "instance/preempted").content == b"FALSE"
    user_data = get(gce_emulator, "instance/attributes/user-data").content
    assert user_data.startswith(b"#cloud-config\n")


def test_list_leaves_are_one_item_per_line_and_tags_are_json(gce_emulator: GceEmulator) -> None:
    scopes = get(gce_emulator, "instance/service-accounts/default/scopes").content
    assert scopes.endswith(b"\n")
    assert b"https://www.googleapis.com/auth/cloud-platform\n" in scopes
    assert get(gce_emulator, "instance/service-accounts/default/aliases").content == b"default\n"
    dns = get(gce_emulator, "instance/network-interfaces/0/dns-servers")
    assert dns.content == b"169.254.169.254\n"
    tags = get(gce_emulator, "instance/tags")
    assert tags.headers["Content-Type"] == "application/json"
    assert tags.content == b'["http-server","https-server"]'


# -- errors and redirects ---------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Metadata-Flavor": "google"}, {"Metadata-Flavor": ""}])
def test_without_the_flavor_header_is_403_with_googles_page(
    gce_emulator: GceEmulator, headers: dict[str, str]
) -> None:
    response = get(gce_emulator, "instance/name", flavor=False, headers=headers)
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "text/html; charset=UTF-8"
    assert response.headers["Metadata-Flavor"] == "Google"  # the refusal still says Google
    assert len(response.content) == 1649  # the 2023 capture's Content-Length for this URL
    text = response.content.decode()
    assert text.startswith("<!DOCTYPE html>\n<html lang=en>\n")
    assert "<title>Error 403 (Forbidden)!!1</title>" in text
    assert text.endswith(
        "<p>Your client does not have permission to get URL <code>/computeMetadata/v1/instance"
        "/name</code> from this server. Missing Metadata-Flavor:Google header. "
        "<ins>That\u2019s all we know.</ins>\n"
    )


def test_the_403_page_names_the_url_with_its_query(gce_emulator: GceEmulator) -> None:
    response = get(gce_emulator, "instance/?recursive=true", flavor=False)
    assert "<code>/computeMetadata/v1/instance/?recursive=true</code>" in response.text


def test_x_forwarded_for_is_403(gce_emulator: GceEmulator) -> None:
    response = get(gce_emulator, "instance/id", headers={"X-Forwarded-For": "10.0.0.9"})
    assert response.status_code == 403
    assert "Missing Metadata-Flavor" not in response.text
    assert response.headers["Metadata-Flavor"] == "Google"


@pytest.mark.parametrize(
    "path", ["universe/nope", "instance/id/", "instance/zone/x", "instance//id", "nothing/", "/x"]
)
def test_unknown_path_or_leaf_with_a_slash_is_googles_404(
    gce_emulator: GceEmulator, path: str
) -> None:
    response = get(gce_emulator, path)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "text/html; charset=UTF-8"
    assert "<title>Error 404 (Not Found)!!1</title>" in response.text
    assert "ETag" not in response.headers


def test_the_404_page_is_the_captured_one_to_the_byte_count(gce_emulator: GceEmulator) -> None:
    response = get(gce_emulator, "universe/universe_domain")  # the 2025 capture's URL
    assert response.headers["Content-Length"] == "1604"
    assert response.text.endswith(
        "<p>The requested URL <code>/computeMetadata/v1/universe/universe_domain</code> was not "
        "found on this server.  <ins>That\u2019s all we know.</ins>\n"
    )


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("instance", "/computeMetadata/v1/instance/"),
        (
            "instance/attributes?recursive=true",
            "/computeMetadata/v1/instance/attributes/?recursive=true",
        ),
        ("instance/disks/0", "/computeMetadata/v1/instance/disks/0/"),
        ("/computeMetadata/v1", "/computeMetadata/v1/"),
    ],
)
def test_a_directory_without_its_slash_is_301_to_the_slash_form(
    gce_emulator: GceEmulator, path: str, location: str
) -> None:
    response = get(gce_emulator, path)
    assert response.status_code == 301
    assert response.headers["Location"] == f"{gce_emulator.url}{location}"  # absolute
    assert response.headers["Content-Type"] == "text/html"
    assert response.content == location.encode() + b"\n"
    assert "ETag" not in response.headers
    assert get(gce_emulator, response.headers["Location"].removeprefix(gce_emulator.url)).is_success


def test_every_answer_has_the_servers_headers(gce_emulator: GceEmulator) -> None:
    for path, status in (("instance/id", 200), ("instance", 301), ("nope", 404)):
        response = get(gce_emulator, path)
        assert response.status_code == status
        assert response.headers["Metadata-Flavor"] == "Google"
        assert response.headers["Server"] == "Metadata Server for VM"
        assert response.headers["X-XSS-Protection"] == "0"
        assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert email.utils.parsedate_to_datetime(response.headers["Date"]) is not None
        assert int(response.headers["Content-Length"]) == len(response.content)
        names = [name.lower() for name, _ in response.headers.multi_items()]
        assert names[0] == "metadata-flavor"
        assert names[-2:] == ["x-xss-protection", "x-frame-options"]


def test_head_has_the_get_headers_and_no_body(gce_emulator: GceEmulator) -> None:
    got, head = (
        get(gce_emulator, "instance/tags"),
        get(gce_emulator, "instance/tags", method="HEAD"),
    )
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["ETag"] == got.headers["ETag"]
    assert head.headers["Content-Length"] == str(len(got.content))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(gce_emulator: GceEmulator, method: str) -> None:
    response = get(gce_emulator, "instance/id", method=method)
    assert response.status_code == 405
    assert "<title>Error 405 (Method Not Allowed)!!1</title>" in response.text


# -- ETags, recursive, alt --------------------------------------------------------------------


def test_etag_is_16_hex_digits_and_a_function_of_the_bytes(gce_emulator: GceEmulator) -> None:
    first = get(gce_emulator, "instance/id").headers["ETag"]
    assert ETAG.fullmatch(first)
    assert get(gce_emulator, "instance/id").headers["ETag"] == first
    gce_emulator.set("instance/attributes/same", "4520031799277581759")
    assert get(gce_emulator, "instance/attributes/same").headers["ETag"] == first
    gce_emulator.set("instance/attributes/same", "other")
    assert get(gce_emulator, "instance/attributes/same").headers["ETag"] != first
    assert ETAG.fullmatch(get(gce_emulator, "instance/").headers["ETag"])


@pytest.mark.parametrize("flag", ["true", "True", "1"])
def test_recursive_directory_is_compact_json_with_gces_keys(
    gce_emulator: GceEmulator, flag: str
) -> None:
    response = get(gce_emulator, f"instance/?recursive={flag}")
    assert response.headers["Content-Type"] == "application/json"
    assert b" " not in response.content.split(b'"attributes"')[0]  # compact
    assert b'"id":4520031799277581759' in response.content  # a number, every digit kept
    instance = json.loads(response.content)
    assert instance["machineType"].endswith("/machineTypes/e2-standard-2")
    assert instance["networkInterfaces"][0]["accessConfigs"][0]["externalIp"] == "34.41.118.27"
    assert instance["networkInterfaces"][0]["mtu"] == 1460
    assert set(instance["attributes"]) >= {"ssh-keys", "user-data", "enable-oslogin"}
    assert set(instance["serviceAccounts"]) == {"default", SA}
    assert set(instance["serviceAccounts"]["default"]) == {"aliases", "email", "scopes"}
    assert list(instance) == sorted(instance)


def test_recursive_false_is_the_listing(gce_emulator: GceEmulator) -> None:
    listing = get(gce_emulator, "instance/scheduling/?recursive=false")
    assert listing.content == b"automatic-restart\non-host-maintenance\npreemptible\n"


def test_recursive_lists_are_arrays(gce_emulator: GceEmulator) -> None:
    disks = json.loads(get(gce_emulator, "instance/disks/?recursive=true").content)
    assert [disk["index"] for disk in disks] == [0, 1]
    assert list(disks[0]) == ["deviceName", "index", "interface", "mode", "type"]
    ips = get(gce_emulator, "instance/network-interfaces/0/ip-aliases/?recursive=true")
    assert json.loads(ips.content) == ["10.24.3.0/24"]


def test_the_whole_tree_is_the_document(gce_emulator: GceEmulator) -> None:
    whole = json.loads(get(gce_emulator, "?recursive=true&alt=json").content)
    assert whole == gce_emulator.document()
    assert whole["universe"] == {"universeDomain": "googleapis.com"}
    assert whole["project"]["numericProjectId"] == 824706217453


def test_alt_json_on_leaves(gce_emulator: GceEmulator) -> None:
    name = get(gce_emulator, "instance/name?alt=json")
    assert name.headers["Content-Type"] == "application/json"
    assert name.content == b'"imdsfs-demo"'
    assert get(gce_emulator, "instance/id?alt=json").content == b"4520031799277581759"
    scopes = json.loads(get(gce_emulator, "instance/service-accounts/default/scopes?alt=json").text)
    assert "https://www.googleapis.com/auth/cloud-platform" in scopes


def test_alt_text(gce_emulator: GceEmulator) -> None:
    tags = get(gce_emulator, "instance/tags?alt=text")
    assert (tags.content, tags.headers["Content-Type"]) == (
        b"http-server\nhttps-server\n",
        "application/text",
    )
    disks = get(gce_emulator, "instance/disks/?recursive=true&alt=text")
    assert disks.content.startswith(b"0/device-name imdsfs-demo\n0/index 0\n0/interface SCSI\n")
    whole = get(gce_emulator, "?recursive=true&alt=text").text
    lines = whole.split("\n")
    assert "instance/id 4520031799277581759" in lines
    assert "instance/network-interfaces/0/access-configs/0/external-ip 34.41.118.27" in lines
    assert f"instance/service-accounts/{SA}/aliases default" in lines
    scope_lines = [
        line for line in lines if line.startswith("instance/service-accounts/default/scopes ")
    ]
    assert len(scope_lines) == 4  # a list leaf: one line per item, the path repeated
    assert "instance/attributes/user-data #cloud-config" in lines
    assert not [line for line in lines if line.split(" ")[0].endswith(("/token", "/identity"))]


def test_alt_json_on_a_directory_lists_it_as_an_array(gce_emulator: GceEmulator) -> None:
    listing = get(gce_emulator, "project/?alt=json")
    assert json.loads(listing.content) == ["attributes/", "numeric-project-id", "project-id"]


# -- service accounts ----------------------------------------------------------------------


def token(emu: GceEmulator, account: str = "default") -> dict[str, object]:
    response = get(emu, f"instance/service-accounts/{account}/token")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    parsed: dict[str, object] = json.loads(response.content)
    return parsed


def test_token_is_googles_json_and_counts_down_on_the_emulator_clock(
    make_gce_emulator: MakeGceEmulator,
) -> None:
    clock = ManualClock()
    emu = make_gce_emulator(clock=clock)
    first = token(emu)
    assert list(first) == ["access_token", "expires_in", "token_type"]
    assert first["token_type"] == "Bearer"
    assert first["expires_in"] == 3599
    assert str(first["access_token"]).startswith("ya29.")
    clock.advance(1000.5)
    later = token(emu)
    assert (later["access_token"], later["expires_in"]) == (first["access_token"], 2599)
    assert token(emu, SA)["access_token"] == first["access_token"]  # one account, two names
    clock.advance(2599)
    renewed = token(emu)
    assert renewed["access_token"] != first["access_token"]  # never an expired token
    assert renewed["expires_in"] == 3599
    assert emu.counters.tokens_issued == 2


def test_rotate_tokens_now_and_on_a_period(make_gce_emulator: MakeGceEmulator) -> None:
    clock = ManualClock()
    emu = make_gce_emulator(clock=clock)
    first = token(emu)["access_token"]
    emu.rotate_tokens()
    second = token(emu)["access_token"]
    assert second != first
    emu.rotate_tokens_every = 600
    clock.advance(599)
    assert token(emu)["access_token"] == second
    clock.advance(1)
    assert token(emu)["access_token"] != second
    assert (
        emu.get_bytes("instance/service-accounts/default/token")
        == get(emu, "instance/service-accounts/default/token").content
    )


def test_tokens_are_not_in_recursive_output(gce_emulator: GceEmulator) -> None:
    access = str(token(gce_emulator)["access_token"])
    body = get(gce_emulator, "instance/service-accounts/?recursive=true").text
    assert access not in body
    assert "access_token" not in body


def test_identity_needs_an_audience(gce_emulator: GceEmulator) -> None:
    for query in ("", "?audience="):
        response = get(gce_emulator, f"instance/service-accounts/default/identity{query}")
        assert response.status_code == 400
        assert response.content == b"non-empty audience parameter required\n"


def decode_jwt(text: str) -> tuple[dict[str, object], dict[str, object]]:
    header, claims, signature = text.split(".")
    assert signature

    def part(value: str) -> dict[str, object]:
        decoded: dict[str, object] = json.loads(
            base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        )
        return decoded

    return part(header), part(claims)


def test_identity_is_a_jwt_for_the_audience(gce_emulator: GceEmulator) -> None:
    path = f"instance/service-accounts/{SA}/identity?audience=https://example.com&format=full"
    response = get(gce_emulator, path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/text"
    header, claims = decode_jwt(response.text)
    assert header["alg"] == "RS256"
    assert claims["aud"] == "https://example.com"
    assert claims["email"] == SA
    assert claims["iss"] == "https://accounts.google.com"
    assert abs(int(str(claims["iat"])) - time.time()) < 5
    assert int(str(claims["exp"])) - int(str(claims["iat"])) == 3600
    engine = claims["google"]["compute_engine"]  # type: ignore[index]
    assert engine["instance_id"] == "4520031799277581759"
    assert engine["zone"] == "us-central1-a"
    standard = get(gce_emulator, "instance/service-accounts/default/identity?audience=x")
    assert "google" not in decode_jwt(standard.text)[1]


def test_token_and_identity_take_post_too(gce_emulator: GceEmulator) -> None:
    assert get(gce_emulator, "instance/service-accounts/default/token", method="POST").is_success


def test_an_unknown_account_has_no_token(gce_emulator: GceEmulator) -> None:
    assert get(gce_emulator, "instance/service-accounts/nobody/token").status_code == 404
    assert get(gce_emulator, "instance/attributes/token").status_code == 404


# -- the Python API -------------------------------------------------------------------------


def test_get_bytes_is_what_a_plain_get_returns(gce_emulator: GceEmulator) -> None:
    for path in ("", "instance/", "instance/id", "instance/tags", "project/attributes/ssh-keys"):
        assert gce_emulator.get_bytes(path) == get(gce_emulator, path).content, path
    for path in ("instance", "instance/id/", "nope", "instance/service-accounts/default/identity"):
        with pytest.raises(KeyError):
            gce_emulator.get_bytes(path)


def test_leaves_are_every_file_as_served(gce_emulator: GceEmulator) -> None:
    leaves = gce_emulator.leaves()
    assert leaves["instance/id"] == b"4520031799277581759"
    assert leaves["universe/universe-domain"] == b"googleapis.com"
    assert "instance/network-interfaces/0/ip-aliases/0" in leaves
    assert not [path for path in leaves if path.endswith(("/token", "/identity"))]
    for path, body in leaves.items():
        assert get(gce_emulator, path).content == body, path


def test_set_and_delete_change_what_is_served(gce_emulator: GceEmulator) -> None:
    gce_emulator.set("instance/attributes/team", "storage")
    assert get(gce_emulator, "instance/attributes/team").content == b"storage"
    assert b"team\n" in get(gce_emulator, "instance/attributes/").content
    gce_emulator.set("instance/scheduling", {"automaticRestart": "FALSE", "preemptible": "TRUE"})
    assert get(gce_emulator, "instance/scheduling/").content == b"automatic-restart\npreemptible\n"
    gce_emulator.set("instance/disks/2", {"deviceName": "scratch", "index": 2, "type": "SCRATCH"})
    assert get(gce_emulator, "instance/disks/2/device-name").content == b"scratch"
    gce_emulator.set("instance/new-thing", 7)
    assert get(gce_emulator, "instance/?recursive=true").json()["newThing"] == 7
    gce_emulator.delete("instance/attributes/team")
    assert get(gce_emulator, "instance/attributes/team").status_code == 404
    with pytest.raises(KeyError):
        gce_emulator.delete("instance/attributes/team")
    # Attribute names are names: both spellings of the ssh keys may be there, as on GCE.
    gce_emulator.set("instance/attributes", {"sshKeys": "a:key", "ssh-keys": "b:key"})
    assert get(gce_emulator, "instance/attributes/").content == b"ssh-keys\nsshKeys\n"
    with pytest.raises(ValueError, match="is a leaf"):
        gce_emulator.set("instance/id/below", "x")
    with pytest.raises(ValueError, match="next index"):
        gce_emulator.set("instance/disks/9", {"index": 9})
    with pytest.raises(DocumentError, match="True"):
        gce_emulator.set("instance/attributes/x", True)


def test_a_document_is_validated_and_copied(make_gce_emulator: MakeGceEmulator) -> None:
    with pytest.raises(DocumentError, match="/instance/disks/0/index: expected"):
        GceDocument.from_dict({"instance": {"disks": [{"index": 1.5}]}, "project": {}})
    with pytest.raises(DocumentError, match='"project" must be an object'):
        GceDocument.from_dict({"instance": {}})
    data: dict[str, object] = {"instance": {"id": 1, "attributes": {"a": "b"}}, "project": {}}
    emu = make_gce_emulator(data)
    emu.set("instance/attributes/a", "changed")
    assert data == {"instance": {"id": 1, "attributes": {"a": "b"}}, "project": {}}
    assert get(emu, "instance/").content == b"attributes/\nid\n"


# -- scenarios ------------------------------------------------------------------------------


def test_maintenance_event_appears_on_the_emulator_clock(
    make_gce_emulator: MakeGceEmulator,
) -> None:
    clock = ManualClock()
    emu = make_gce_emulator(clock=clock)
    emu.schedule_maintenance_event(after=30)
    clock.advance(29)
    assert get(emu, "instance/maintenance-event").content == b"NONE"
    clock.advance(1)
    assert get(emu, "instance/maintenance-event").content == b"MIGRATE_ON_HOST_MAINTENANCE"
    emu.schedule_maintenance_event(value="NONE")
    assert emu.get_bytes("instance/maintenance-event") == b"NONE"
    with pytest.raises(ValueError, match="value must be one of"):
        emu.schedule_maintenance_event(value="REBOOT")


def test_preemption_sets_preempted_and_the_terminate_event(
    make_gce_emulator: MakeGceEmulator,
) -> None:
    clock = ManualClock()
    emu = make_gce_emulator(clock=clock)
    emu.schedule_preemption(after=10)
    assert emu.get_bytes("instance/preempted") == b"FALSE"
    clock.advance(10)
    assert get(emu, "instance/preempted").content == b"TRUE"
    assert get(emu, "instance/maintenance-event").content == b"TERMINATE_ON_HOST_MAINTENANCE"


# -- faults and counters ---------------------------------------------------------------------


def test_faults_apply_as_in_the_ec2_emulator(make_gce_emulator: MakeGceEmulator) -> None:
    emu = make_gce_emulator(
        seed=3, faults=Faults(throttle_rate=1.0, throttle_status=429, retry_after=2)
    )
    throttled = get(emu, "instance/id")
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "2")
    assert throttled.headers["Metadata-Flavor"] == "Google"
    emu.faults = Faults()
    emu.faults.fail_next(1, status=503, path=GCE_ROOT + "instance/*")
    assert get(emu, "project/project-id").status_code == 200
    assert get(emu, "instance/id").status_code == 503
    emu.faults.reset_next(1)
    with pytest.raises(httpx.TransportError):
        get(emu, "instance/id")
    emu.faults.latency = 0.2
    started = time.monotonic()
    assert get(emu, "instance/id").status_code == 200
    assert time.monotonic() - started >= 0.2
    assert emu.faults.injected() == {"fail": 1, "reset": 1}


def test_counters_record_paths_without_the_query(gce_emulator: GceEmulator) -> None:
    get(gce_emulator, "instance/?recursive=true")
    get(gce_emulator, "instance")
    counters = gce_emulator.counters
    assert counters.paths() == [GCE_ROOT + "instance/", GCE_ROOT + "instance"]
    assert counters.count(status=301) == 1


def test_stop_is_idempotent_and_releases_the_port(make_gce_emulator: MakeGceEmulator) -> None:
    emu = make_gce_emulator()
    emu.stop()
    emu.stop()
    with pytest.raises(httpx.ConnectError):
        get(emu, "instance/id")


async def test_async_context_manager() -> None:
    async with GceEmulator() as emu, httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(
            emu.url + GCE_ROOT + "instance/name", headers={"Metadata-Flavor": "Google"}
        )
    assert response.content == b"imdsfs-demo"


# -- imdsfs emulate --provider gce ------------------------------------------------------------


def emulate(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "imdsfs.emulator", "--port", "0", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_emulate_gce_prints_its_url_and_stops_on_sigterm() -> None:
    process = emulate("--provider", "gce", "--preempt-after", "0")
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        with httpx.Client(trust_env=False) as client:
            response = client.get(
                url + GCE_ROOT + "instance/preempted", headers={"Metadata-Flavor": "Google"}
            )
        assert response.content == b"TRUE"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


def test_emulate_still_defaults_to_ec2_and_refuses_the_other_providers_options() -> None:
    process = emulate()
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        with httpx.Client(trust_env=False) as client:
            put = client.put(
                url + "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
            )
        assert put.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    for args in (["--provider", "gce", "--spot-after", "5"], ["--preempt-after", "5"]):
        refused = subprocess.run(
            [sys.executable, "-m", "imdsfs.emulator", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert refused.returncode == 2
        assert "is not an option of --provider" in refused.stderr
