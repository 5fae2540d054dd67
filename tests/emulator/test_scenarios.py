"""Live changes: set/delete, spot, rebalance, maintenance events, credential rotation."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from imdsfs.emulator import Emulator, ManualClock, default_document

from ..conftest import MakeEmulator, imds_get

ROLE = "meta-data/iam/security-credentials/imdsfs-demo-role"
EC2_INSTANCE = "meta-data/identity-credentials/ec2/security-credentials/ec2-instance"
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.fixture
def clocked(make_emulator: MakeEmulator, emulator_clock: ManualClock) -> Emulator:
    return make_emulator(clock=emulator_clock)


def meta_listing(emu: Emulator) -> list[str]:
    return imds_get(emu, "/latest/meta-data/").text.split("\n")


def test_set_creates_a_tag_and_its_directories(emulator: Emulator) -> None:
    emulator.set("meta-data/tags/instance/Team", "storage")
    assert imds_get(emulator, "/latest/meta-data/tags/instance/Team").content == b"storage"
    tags = imds_get(emulator, "/latest/meta-data/tags/instance/").text.split("\n")
    assert "Team" in tags


def test_set_replaces_a_value_in_place(emulator: Emulator) -> None:
    emulator.set("meta-data/tags/instance/Name", "renamed")
    assert imds_get(emulator, "/latest/meta-data/tags/instance/Name").content == b"renamed"
    assert imds_get(emulator, "/latest/meta-data/tags/instance").text.split("\n")[1] == "Name"


def test_set_a_subtree_and_raw_bytes(emulator: Emulator) -> None:
    emulator.set("meta-data/elastic-inference", {"associations": {"eia-1": '{"v": 1}'}})
    emulator.set("user-data", b"\x00\xffraw")
    assert imds_get(emulator, "/latest/meta-data/elastic-inference/").content == b"associations/"
    assert imds_get(emulator, "/latest/user-data").content == b"\x00\xffraw"


def test_set_rejects_paths_outside_the_document_and_through_leaves(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="must start with"):
        emulator.set("elsewhere/x", "1")
    with pytest.raises(ValueError, match="is a leaf"):
        emulator.set("meta-data/instance-id/child", "1")
    with pytest.raises(ValueError, match="user-data is a leaf"):
        emulator.set("user-data", {"a": "b"})


def test_delete_removes_leaves_and_directories(emulator: Emulator) -> None:
    emulator.delete("meta-data/tags/instance/Environment")
    emulator.delete("meta-data/iam")
    assert imds_get(emulator, "/latest/meta-data/tags/instance/Environment").status_code == 404
    assert imds_get(emulator, "/latest/meta-data/iam/info").status_code == 404
    assert "iam/" not in meta_listing(emulator)


def test_delete_user_data_gives_404(emulator: Emulator) -> None:
    emulator.delete("user-data")
    assert imds_get(emulator, "/latest/user-data").status_code == 404


def test_delete_of_a_missing_path_is_a_key_error(emulator: Emulator) -> None:
    with pytest.raises(KeyError):
        emulator.delete("meta-data/spot")


def test_delete_a_public_key_by_its_index(emulator: Emulator) -> None:
    emulator.delete("meta-data/public-keys/0")
    assert imds_get(emulator, "/latest/meta-data/public-keys/").content == b"1=ops-team"


def test_changes_do_not_touch_the_callers_document(make_emulator: MakeEmulator) -> None:
    document = default_document()
    emu = make_emulator(document)
    emu.delete("user-data")
    assert document.read("user-data") is not None


def test_spot_interruption_appears_after_the_delay(
    clocked: Emulator, emulator_clock: ManualClock
) -> None:
    clocked.schedule_spot_interruption(after=30)
    assert "spot/" not in meta_listing(clocked)
    assert imds_get(clocked, "/latest/meta-data/spot/instance-action").status_code == 404
    emulator_clock.advance(30)
    listing = meta_listing(clocked)
    assert "spot/" in listing
    assert listing == sorted(listing)
    assert imds_get(clocked, "/latest/meta-data/spot/").content == (
        b"instance-action\ntermination-time"
    )
    action = imds_get(clocked, "/latest/meta-data/spot/instance-action").text
    match = re.fullmatch(r'\{"action": "terminate", "time": "(' + ISO + r')"\}', action)
    assert match, action
    when = datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    expected = datetime.now(UTC) + timedelta(minutes=2)
    assert abs((when - expected).total_seconds()) < 5
    termination = imds_get(clocked, "/latest/meta-data/spot/termination-time").text
    assert termination == match[1]


def test_spot_action_can_be_stop_or_hibernate(emulator: Emulator) -> None:
    emulator.schedule_spot_interruption(action="hibernate")
    assert b'"action": "hibernate"' in emulator.get_bytes("meta-data/spot/instance-action")
    with pytest.raises(ValueError, match="action must be one of"):
        emulator.schedule_spot_interruption(action="explode")


def test_rebalance_recommendation_appears_after_the_delay(
    clocked: Emulator, emulator_clock: ManualClock
) -> None:
    clocked.schedule_rebalance(after=10)
    path = "/latest/meta-data/events/recommendations/rebalance"
    assert imds_get(clocked, path).status_code == 404
    assert imds_get(clocked, "/latest/meta-data/events/").content == b"maintenance/"
    emulator_clock.advance(10)
    assert re.fullmatch(r'\{"noticeTime": "' + ISO + r'"\}', imds_get(clocked, path).text)
    assert imds_get(clocked, "/latest/meta-data/events/").content == (
        b"maintenance/\nrecommendations/"
    )


def test_maintenance_event_is_a_jackson_array_with_one_event(
    clocked: Emulator, emulator_clock: ManualClock
) -> None:
    path = "/latest/meta-data/events/maintenance/scheduled"
    assert imds_get(clocked, path).content == b"[]"
    clocked.schedule_maintenance_event(after=5, code="instance-stop")
    emulator_clock.advance(4)
    assert imds_get(clocked, path).content == b"[]"
    emulator_clock.advance(1)
    body = imds_get(clocked, path).text
    assert body.startswith('[ {\n  "NotBefore" : "')
    assert body.endswith('"\n} ]')
    (event,) = json.loads(body)
    assert list(event) == ["NotBefore", "Code", "Description", "EventId", "NotAfter", "State"]
    assert event["Code"] == "instance-stop"
    assert event["State"] == "active"
    assert re.fullmatch(r"instance-event-[0-9a-f]{17}", event["EventId"])
    date = r"[1-3]?\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT"
    assert re.fullmatch(date, event["NotBefore"])
    assert re.fullmatch(date, event["NotAfter"])


def test_rotate_credentials_changes_every_role(emulator: Emulator) -> None:
    before = {path: json.loads(emulator.get_bytes(path)) for path in (ROLE, EC2_INSTANCE)}
    emulator.rotate_credentials()
    for path, old in before.items():
        body = emulator.get_bytes(path).decode()
        new = json.loads(body)
        assert body.startswith('{\n  "Code" : "Success",\n')
        assert list(new) == list(old)
        for key in ("AccessKeyId", "SecretAccessKey", "Token", "Expiration"):
            assert new[key] != old[key], key
        assert re.fullmatch(r"ASIA[A-Z2-7]{16}", new["AccessKeyId"])
        expiration = datetime.strptime(new["Expiration"], "%Y-%m-%dT%H:%M:%SZ")
        assert expiration.replace(tzinfo=UTC) > datetime.now(UTC) + timedelta(hours=5)


def test_credentials_rotate_on_a_period_of_the_emulator_clock(
    clocked: Emulator, emulator_clock: ManualClock
) -> None:
    clocked.rotate_credentials_every = 3600
    first = clocked.get_bytes(ROLE)
    emulator_clock.advance(3599)
    assert imds_get(clocked, "/latest/" + ROLE).content == first
    emulator_clock.advance(1)
    second = imds_get(clocked, "/latest/" + ROLE).content
    assert second != first
    assert imds_get(clocked, "/latest/" + ROLE).content == second  # stable until next period
    clocked.rotate_credentials_every = None
    emulator_clock.advance(7200)
    assert imds_get(clocked, "/latest/" + ROLE).content == second


def test_seeded_emulators_rotate_to_the_same_credentials(make_emulator: MakeEmulator) -> None:
    one, two = make_emulator(seed=7), make_emulator(seed=7)
    one.rotate_credentials()
    two.rotate_credentials()
    assert (
        json.loads(one.get_bytes(ROLE))["AccessKeyId"]
        == (json.loads(two.get_bytes(ROLE))["AccessKeyId"])
    )
