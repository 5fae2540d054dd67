"""The emulator's hostile-IMDS knobs: raw answers, trickled and endless bodies, a token
response without its TTL, and the bookkeeping the soak reads (token values, fault counts)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from imdsfs.emulator import Emulator, Faults

from ..conftest import TOKEN_TTL_HEADER, MakeEmulator, imds_get, imds_request, imds_token

HTML = b"<html><body><h1>Service Unavailable</h1></body></html>\n"


def test_set_raw_answers_exactly_that_with_or_without_a_token(emulator: Emulator) -> None:
    emulator.set_raw("meta-data/placement/", HTML, content_type="text/html")
    for token in (True, False):
        response = imds_get(emulator, "/latest/meta-data/placement/", token=token)
        assert response.status_code == 200
        assert response.content == HTML
        assert response.headers["Content-Type"] == "text/html"
    # Only that exact path; the rest of the instance is untouched.
    region = imds_get(emulator, "/latest/meta-data/placement/region")
    assert region.content == emulator.get_bytes("meta-data/placement/region")


def test_clear_raw_restores_the_faithful_answer(emulator: Emulator) -> None:
    emulator.set_raw("meta-data/instance-id", b"i-bogus")
    emulator.set_raw("meta-data/ami-id", b"ami-bogus")
    emulator.clear_raw("meta-data/instance-id")
    assert imds_get(emulator, "/latest/meta-data/instance-id").content == emulator.get_bytes(
        "meta-data/instance-id"
    )
    assert imds_get(emulator, "/latest/meta-data/ami-id").content == b"ami-bogus"
    emulator.clear_raw()
    assert imds_get(emulator, "/latest/meta-data/ami-id").content != b"ami-bogus"
    with pytest.raises(KeyError):
        emulator.clear_raw("meta-data/ami-id")


def test_set_raw_can_redirect_the_token_request(emulator: Emulator) -> None:
    emulator.set_raw("api/token", status=302, headers={"Location": "http://192.0.2.1/steal"})
    response = imds_request(
        emulator, "/latest/api/token", method="PUT", token=False, headers={TOKEN_TTL_HEADER: "60"}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "http://192.0.2.1/steal"


def test_trickle_sends_the_whole_body_slowly(emulator: Emulator) -> None:
    emulator.set_raw("meta-data/instance-id", b"i-12345", trickle=0.05)
    started = time.monotonic()
    response = imds_get(emulator, "/latest/meta-data/instance-id")
    assert response.content == b"i-12345"
    assert time.monotonic() - started >= 6 * 0.05  # a pause between each two bytes


def test_an_endless_body_keeps_coming_and_never_declares_a_length(emulator: Emulator) -> None:
    emulator.set_raw("meta-data/", b"a\n", endless=True)
    token = imds_token(emulator)
    client = httpx.Client(trust_env=False)
    received = 0
    with client.stream(
        "GET", emulator.url + "/latest/meta-data/", headers={"X-aws-ec2-metadata-token": token}
    ) as response:
        assert response.status_code == 200
        assert "Content-Length" not in response.headers
        for chunk in response.iter_raw():
            received += len(chunk)
            if received >= 20:  # ten repetitions: it does not end by itself
                break
    client.close()
    assert received >= 20


def test_stop_ends_an_endless_body_at_once(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(tokens="optional")
    emu.set_raw("meta-data/", b"x", trickle=0.01, endless=True)
    bodies: list[bytes] = []
    thread = threading.Thread(
        target=lambda: bodies.append(imds_get(emu, "/latest/meta-data/", token=False).content)
    )
    thread.start()
    while emu.counters.count() == 0:
        time.sleep(0.01)
    time.sleep(0.1)
    started = time.monotonic()
    emu.stop()
    thread.join(timeout=5)
    assert time.monotonic() - started < 1.0
    # Without a Content-Length the close ends the body: what was sent so far, all "x".
    assert len(bodies) == 1
    assert set(bodies[0]) == {ord("x")}


def test_a_token_response_can_omit_its_ttl_header(emulator: Emulator) -> None:
    emulator.token_ttl_header = False
    put = imds_request(
        emulator, "/latest/api/token", method="PUT", token=False, headers={TOKEN_TTL_HEADER: "60"}
    )
    assert put.status_code == 200
    assert TOKEN_TTL_HEADER not in put.headers
    assert imds_get(emulator, "/latest/meta-data/instance-id", token=put.text).status_code == 200


def test_issued_tokens_lists_every_token_even_revoked_ones(emulator: Emulator) -> None:
    first = imds_token(emulator)
    emulator.revoke_tokens()
    second = imds_token(emulator)
    assert emulator.issued_tokens() == [first, second]


def test_faults_count_what_they_injected(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(tokens="optional", faults=Faults(error_rate=1.0))
    emu.faults.reset_next(1)
    emu.faults.stall_next(1, seconds=0.01)
    with pytest.raises(httpx.TransportError):
        imds_get(emu, "/latest/meta-data/instance-id", token=False)
    for _ in range(3):
        imds_get(emu, "/latest/meta-data/instance-id", token=False)
    assert emu.faults.injected() == {"reset": 1, "stall": 1, "fail": 2}
    assert emu.counters.total == 4
