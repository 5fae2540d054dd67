"""A real mount of the Azure emulator: every file, every mode, the header and api-version on
every request, and Azure's 5 requests per second never exceeded, however hard it is read.

The emulator keeps Azure's limit on the real clock: a request over 5 in any one second is
answered 429 and counted (``throttled``), so "no 429" is "never above 5 in any second".
"""

from __future__ import annotations

import base64
import errno
import json
import os
import random
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from imdsfs.emulator import AzureEmulator
from imdsfs.providers.azure import PINNED

from .conftest import ImportCloudInit, Mounted
from .emulator.test_azure import fetch_with_cloud_init
from .test_gce_mount import files_under

AZURE = ("--provider", "azure")
V = PINNED["instance"]
SECRETS = ("user-data", "instance/compute/userData", "instance/compute/customData")
_http = httpx.Client(trust_env=False)


def format_text(emu: AzureEmulator, version: str = V) -> dict[str, bytes]:
    """Every leaf as ``GET /metadata/instance/<path>?format=text`` returns it, over HTTP, by
    mount path; the emulator's limit is lifted for the while, then put back, empty."""
    emu.rate_limit = 1000
    found = {}
    for path in emu.leaves(version):
        url = f"{emu.url}/metadata/instance/{path}?api-version={version}&format=text"
        response = _http.get(url, headers={"Metadata": "true"})
        assert response.status_code == 200, path
        found[f"instance/{path}"] = response.content
    emu.rate_limit = 5
    emu.reset_rate_limit()
    emu.counters.reset()
    return found


def every_request_was_answered(emu: AzureEmulator) -> None:
    """A 400 would be a missing header or api-version; a 429 a request over the limit."""
    assert emu.counters.total > 0
    assert emu.counters.count(status=200) == emu.counters.total, emu.counters.paths()
    assert emu.throttled == 0


@pytest.fixture
def expected(azure_emulator: AzureEmulator) -> dict[str, bytes]:
    return format_text(azure_emulator)


def test_every_file_is_what_the_protocol_gives_for_its_path(
    make_mount: Callable[..., Mounted], azure_emulator: AzureEmulator, expected: dict[str, bytes]
) -> None:
    root = make_mount(azure_emulator, *AZURE).path
    files = files_under(root)
    assert {path: files.get(path) for path in expected} == expected
    user_data = azure_emulator.get_json(V)["compute"]["userData"]
    assert files["user-data"] == base64.b64decode(user_data)
    events = _http.get(
        f"{azure_emulator.url}/metadata/scheduledevents?api-version=2020-07-01",
        headers={"Metadata": "true"},
    )
    assert files["scheduledevents"] == events.content
    assert json.loads(files["attested/document"])["encoding"] == "pkcs7"
    assert set(files) == {*expected, "user-data", "scheduledevents", "attested/document"}
    assert sorted(os.listdir(root)) == ["attested", "instance", "scheduledevents", "user-data"]
    every_request_was_answered(azure_emulator)


def test_user_data_and_the_attested_document_are_root_only(
    make_mount: Callable[..., Mounted], azure_emulator: AzureEmulator
) -> None:
    root = make_mount(azure_emulator, *AZURE).path
    for path in (*SECRETS, "attested/document"):
        assert stat.S_IMODE((root / path).stat().st_mode) == 0o400, path
    for path in ("scheduledevents", "instance/compute/vmId", "instance/compute/tags"):
        assert stat.S_IMODE((root / path).stat().st_mode) == 0o444, path


def test_user_data_is_never_logged_even_with_debug(
    make_mount: Callable[..., Mounted], azure_emulator: AzureEmulator
) -> None:
    mounted = make_mount(azure_emulator, *AZURE, "--debug")
    files_under(mounted.path)
    encoded = azure_emulator.get_json(V)["compute"]["userData"]
    log = mounted.log()
    assert "GET /metadata/instance/" in log  # it did log its requests
    assert encoded[:40] not in log
    assert base64.b64decode(encoded).decode()[:40] not in log


def test_without_user_data_there_is_no_user_data_file(
    make_mount: Callable[..., Mounted], azure_emulator: AzureEmulator
) -> None:
    azure_emulator.set("compute/userData", "")
    root = make_mount(azure_emulator, *AZURE).path
    assert sorted(os.listdir(root)) == ["attested", "instance", "scheduledevents"]
    assert not (root / "user-data").exists()


def test_a_full_read_and_64_cold_readers_stay_within_5_requests_a_second(
    make_mount: Callable[..., Mounted], azure_emulator: AzureEmulator, expected: dict[str, bytes]
) -> None:
    root = make_mount(azure_emulator, *AZURE).path  # nothing read yet: every reader is cold
    barrier = threading.Barrier(65)
    picks = random.Random(1).choices(sorted(expected), k=64)
    read: list[tuple[str, bytes]] = []
    walked: dict[str, bytes] = {}

    def reader(path: str) -> None:
        barrier.wait()
        read.append((path, (root / path).read_bytes()))

    def walker() -> None:
        barrier.wait()
        walked.update(files_under(root))

    threads = [threading.Thread(target=reader, args=(p,)) for p in picks]
    threads.append(threading.Thread(target=walker))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(read) == sorted((path, expected[path]) for path in picks)
    assert {path: walked[path] for path in expected} == expected
    every_request_was_answered(azure_emulator)
    # The document once, and the two categories it does not hold.
    assert azure_emulator.counters.total <= 5, azure_emulator.counters.paths()


def test_reads_that_want_more_than_5_requests_a_second_wait_for_them(
    make_mount: Callable[..., Mounted], azure_emulator: AzureEmulator, expected: dict[str, bytes]
) -> None:
    """Every value stale after 0.2 s: 64 readers and a walker would ask many times a second."""
    root = make_mount(azure_emulator, *AZURE, "--ttl", "**=0.2").path
    stop = time.monotonic() + 3.0
    wrong: list[str] = []
    picks = [*expected, "scheduledevents"]

    def reader(seed: int) -> None:
        choose = random.Random(seed).choice
        while time.monotonic() < stop:
            path = choose(picks)
            body = (root / path).read_bytes()
            if path in expected and body != expected[path]:
                wrong.append(path)

    def walker() -> None:
        while time.monotonic() < stop:
            files_under(root)

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(64)]
    threads.append(threading.Thread(target=walker))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    every_request_was_answered(azure_emulator)
    assert azure_emulator.counters.total >= 10  # they did ask again and again, 5 a second
    stats = json.loads(os.getxattr(root, "user.imds.stats"))
    assert stats["rate_limited"] > 0  # and the mount did hold them back


@pytest.mark.parametrize(
    "throttle",
    [
        pytest.param(lambda emu: setattr(emu, "rate_limit", 1), id="a-lower-limit"),
        pytest.param(
            lambda emu: emu.faults.throttle_next(3, status=429, path="/metadata/instance/"),
            id="429s-without-retry-after",
        ),
    ],
)
def test_a_throttled_service_still_gives_every_file_within_the_deadline(
    make_mount: Callable[..., Mounted],
    azure_emulator: AzureEmulator,
    expected: dict[str, bytes],
    throttle: Callable[[AzureEmulator], None],
) -> None:
    throttle(azure_emulator)
    root = make_mount(azure_emulator, *AZURE).path
    started = time.monotonic()
    files = files_under(root)
    assert time.monotonic() - started < 5.0  # the deadline: no read gave up
    assert {path: files.get(path) for path in expected} == expected
    assert azure_emulator.counters.count(status=429) > 0  # it was throttled, and retried after
    assert azure_emulator.counters.count(status=400) == 0


def test_a_document_that_cannot_be_read_hides_nothing_else(
    make_mount: Callable[..., Mounted], azure_emulator: AzureEmulator
) -> None:
    """Scheduled events and the attested document have URLs of their own: the root lists
    them, and they read, while the instance document is refused as unreadable."""
    azure_emulator.set_raw("/metadata/instance/", b"not json")
    root = make_mount(azure_emulator, *AZURE).path
    # user-data may exist (the document would say): shown, and reading it says why not.
    listed = ["attested", "instance", "scheduledevents", "user-data"]
    assert sorted(os.listdir(root)) == listed
    events = (root / "scheduledevents").read_bytes()
    assert json.loads(events)["DocumentIncarnation"] == azure_emulator.document_incarnation
    assert os.listdir(root / "attested") == ["document"]
    for unreadable in ("instance", "user-data"):
        with pytest.raises(OSError) as raised:
            os.listdir(root / unreadable) if unreadable == "instance" else (
                root / unreadable
            ).read_bytes()
        assert raised.value.errno == errno.EIO


def test_an_older_imds_is_asked_with_the_newest_version_it_names(
    make_mount: Callable[..., Mounted], azure_emulator: AzureEmulator
) -> None:
    older = "2021-12-13"
    azure_emulator.newest_api_version = older
    expected = format_text(azure_emulator, older)
    files = files_under(make_mount(azure_emulator, *AZURE).path)
    assert {path: files.get(path) for path in expected} == expected
    assert "user-data" in files  # userData is in 2021-12-13 too
    # One refusal for the document and one for the attested document, then only answers.
    assert azure_emulator.counters.count(status=400) == 2
    assert azure_emulator.counters.count(status=200) == azure_emulator.counters.total - 2


def test_a_scheduled_event_shows_within_its_ttl(
    make_mount: Callable[..., Mounted], azure_emulator: AzureEmulator
) -> None:
    events = make_mount(azure_emulator, *AZURE).path / "scheduledevents"
    assert json.loads(events.read_bytes())["Events"] == []
    azure_emulator.schedule_event(after=0.0, event_type="Preempt")
    scheduled_at = time.monotonic()
    while not json.loads(events.read_bytes())["Events"]:
        assert time.monotonic() - scheduled_at < 5.0 + 1.0  # its TTL, and a second's grace
        time.sleep(0.1)
    document = json.loads(events.read_bytes())
    assert document["DocumentIncarnation"] == 2
    assert document["Events"][0]["EventType"] == "Preempt"
    every_request_was_answered(azure_emulator)


def test_changed_tags_show_within_their_ttl(
    make_mount: Callable[..., Mounted], azure_emulator: AzureEmulator
) -> None:
    tags = make_mount(azure_emulator, *AZURE).path / "instance/compute/tags"
    before = tags.read_bytes()
    azure_emulator.set("compute/tags", "Team:storage")
    changed_at = time.monotonic()
    while tags.read_bytes() == before:
        assert time.monotonic() - changed_at < 5.0 + 1.0
        time.sleep(0.1)
    assert tags.read_bytes() == b"Team:storage"


@pytest.mark.usefixtures("loopback_only")
def test_cloud_init_and_the_mount_agree(
    make_mount: Callable[..., Mounted],
    azure_emulator: AzureEmulator,
    monkeypatch: pytest.MonkeyPatch,
    import_cloud_init: ImportCloudInit,
) -> None:
    """cloud-init's Azure IMDS fetch, reading the same service, and the files: same values."""
    document = fetch_with_cloud_init(azure_emulator, monkeypatch, import_cloud_init)
    root = make_mount(azure_emulator, *AZURE).path
    compute, network = document["compute"], document["network"]
    for key in ("vmId", "name", "location", "vmSize", "tags", "osType", "subscriptionId"):
        assert compute[key] == (root / "instance/compute" / key).read_text(), key
    assert base64.b64decode(compute["userData"]) == (root / "user-data").read_bytes()
    keys = root / "instance/compute/publicKeys"
    assert [k["keyData"] for k in compute["publicKeys"]] == [
        (keys / index / "keyData").read_text() for index in sorted(os.listdir(keys), key=int)
    ]
    nic = Path(root / "instance/network/interface/0")
    assert network["interface"][0]["macAddress"] == (nic / "macAddress").read_text()
    address = network["interface"][0]["ipv4"]["ipAddress"][0]["privateIpAddress"]
    assert address == (nic / "ipv4/ipAddress/0/privateIpAddress").read_text()
