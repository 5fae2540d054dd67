"""IMDSv2 in the emulator: token issue, validation, expiry and the IMDS modes."""

from __future__ import annotations

import re

import httpx
import pytest

from imdsfs.emulator import Emulator, ManualClock

from ..conftest import MakeEmulator, imds_get, imds_request, imds_token

TTL = "X-aws-ec2-metadata-token-ttl-seconds"


def put_token(emu: Emulator, path: str = "/latest/api/token", **headers: str) -> httpx.Response:
    return imds_request(emu, path, method="PUT", token=False, headers=headers)


def test_token_put_returns_a_56_char_base64url_token_and_the_ttl(emulator: Emulator) -> None:
    response = put_token(emulator, **{TTL: "21600"})
    assert response.status_code == 200
    assert re.fullmatch(r"[A-Za-z0-9_-]{54}==", response.text)
    assert response.headers["X-Aws-Ec2-Metadata-Token-Ttl-Seconds"] == "21600"
    assert response.headers["Content-Type"] == "text/plain"
    assert response.headers["Content-Length"] == "56"
    assert "Last-Modified" not in response.headers
    assert emulator.counters.tokens_issued == 1


def test_tokens_are_all_different(emulator: Emulator) -> None:
    assert len({imds_token(emulator) for _ in range(5)}) == 5


@pytest.mark.parametrize("ttl", ["1", "60", "21600"])
def test_ttl_in_range_is_accepted(emulator: Emulator, ttl: str) -> None:
    assert put_token(emulator, **{TTL: ttl}).status_code == 200


@pytest.mark.parametrize("ttl", ["0", "-1", "21601", "abc", "1.5", "", "+5", "0x10"])
def test_bad_ttl_is_400(emulator: Emulator, ttl: str) -> None:
    response = put_token(emulator, **{TTL: ttl})
    assert response.status_code == 400
    assert response.content == b""
    assert emulator.counters.tokens_issued == 0


def test_missing_ttl_is_400(emulator: Emulator) -> None:
    assert put_token(emulator).status_code == 400


@pytest.mark.parametrize("path", ["/latest/api/token/", "/2021-03-23/api/token"])
def test_token_put_elsewhere_is_403(emulator: Emulator, path: str) -> None:
    response = put_token(emulator, path, **{TTL: "60"})
    assert response.status_code == 403
    assert response.content == b""
    assert response.headers["Content-Type"] == "text/plain"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "HEAD"])
def test_token_endpoint_only_accepts_put(emulator: Emulator, method: str) -> None:
    response = imds_request(emulator, "/latest/api/token", method=method, token=False)
    assert response.status_code == 405
    assert response.headers["Allow"] == "PUT"


def test_get_without_token_is_401_when_required(emulator: Emulator) -> None:
    response = imds_get(emulator, "/latest/meta-data/instance-id", token=False)
    assert response.status_code == 401
    assert response.content == b""
    assert response.headers["Content-Length"] == "0"
    assert response.headers["Content-Type"] == "text/plain"


def test_get_without_token_is_served_when_optional(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(tokens="optional")
    response = imds_get(emu, "/latest/meta-data/instance-id", token=False)
    assert response.status_code == 200
    assert "X-Aws-Ec2-Metadata-Token-Ttl-Seconds" not in response.headers


@pytest.mark.parametrize("mode", ["required", "optional"])
def test_unknown_token_is_401_in_both_modes(make_emulator: MakeEmulator, mode: str) -> None:
    emu = make_emulator(tokens=mode)
    response = imds_get(emu, "/latest/meta-data/instance-id", token="not-a-token")
    assert response.status_code == 401
    assert response.content == b""


def test_valid_token_gets_its_remaining_ttl(
    make_emulator: MakeEmulator, emulator_clock: ManualClock
) -> None:
    emu = make_emulator(clock=emulator_clock)
    token = imds_token(emu, ttl=21600)
    emulator_clock.advance(25)
    response = imds_get(emu, "/latest/meta-data/instance-id", token=token)
    assert response.status_code == 200
    assert response.headers["X-Aws-Ec2-Metadata-Token-Ttl-Seconds"] == "21575"


def test_remaining_ttl_is_rounded_up(
    make_emulator: MakeEmulator, emulator_clock: ManualClock
) -> None:
    emu = make_emulator(clock=emulator_clock)
    token = imds_token(emu, ttl=10)
    emulator_clock.advance(9.5)
    response = imds_get(emu, "/latest/meta-data/", token=token)
    assert response.headers["X-Aws-Ec2-Metadata-Token-Ttl-Seconds"] == "1"


def test_token_expires_when_its_ttl_has_elapsed(
    make_emulator: MakeEmulator, emulator_clock: ManualClock
) -> None:
    emu = make_emulator(clock=emulator_clock)
    token = imds_token(emu, ttl=60)
    emulator_clock.advance(59.9)
    assert imds_get(emu, "/latest/meta-data/", token=token).status_code == 200
    emulator_clock.advance(0.1)
    assert imds_get(emu, "/latest/meta-data/", token=token).status_code == 401


def test_revoke_invalidates_issued_tokens_only(emulator: Emulator) -> None:
    old = imds_token(emulator)
    emulator.revoke_tokens()
    assert imds_get(emulator, "/latest/meta-data/", token=old).status_code == 401
    assert imds_get(emulator, "/latest/meta-data/").status_code == 200  # a fresh token works


def test_token_mode_can_change_at_run_time(emulator: Emulator) -> None:
    emulator.tokens = "optional"
    assert imds_get(emulator, "/latest/meta-data/", token=False).status_code == 200
    emulator.tokens = "required"
    assert imds_get(emulator, "/latest/meta-data/", token=False).status_code == 401
    with pytest.raises(ValueError, match="tokens must be one of"):
        emulator.tokens = "sometimes"  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/latest/meta-data/instance-id"),
        ("GET", "/"),
        ("HEAD", "/latest/user-data"),
        ("PUT", "/latest/api/token"),
        ("POST", "/latest/meta-data/"),
    ],
)
def test_disabled_imds_is_403_for_everything(
    make_emulator: MakeEmulator, method: str, path: str
) -> None:
    emu = make_emulator(enabled=False)
    response = imds_request(emu, path, method=method, token=False, headers={TTL: "60"})
    assert response.status_code == 403
    assert response.content == b""


def test_enabled_can_be_switched_at_run_time(emulator: Emulator) -> None:
    token = imds_token(emulator)
    emulator.enabled = False
    assert imds_get(emulator, "/latest/meta-data/", token=token).status_code == 403
    emulator.enabled = True
    assert imds_get(emulator, "/latest/meta-data/", token=token).status_code == 200


def test_hop_limit_exceeded_means_no_answer_to_the_put(emulator: Emulator) -> None:
    emulator.hop_limit_exceeded = True
    with pytest.raises(httpx.ReadTimeout):
        imds_request(
            emulator,
            "/latest/api/token",
            method="PUT",
            token=False,
            headers={TTL: "60"},
            timeout=0.3,
        )
    assert emulator.counters.count(method="PUT", status=0) == 1
    assert emulator.counters.tokens_issued == 0
    emulator.hop_limit_exceeded = False
    assert put_token(emulator, **{TTL: "60"}).status_code == 200


def test_token_never_appears_in_the_logs(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="imdsfs.emulator")
    token = imds_token(emulator)
    imds_get(emulator, "/latest/meta-data/", token=token)
    imds_get(emulator, "/latest/meta-data/", token="bogus-token-value")
    assert caplog.records  # the requests were logged...
    assert token not in caplog.text  # ...without their tokens
    assert "bogus-token-value" not in caplog.text
