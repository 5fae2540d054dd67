"""ImdsClient against the emulator: tokens, retries, deadlines, status codes, limits.

Every claim is checked with the emulator's request counters, so a test fails if the client
sends one request more or fewer than the behaviour promises.
"""

from __future__ import annotations

import gzip
import logging
import socket
import socketserver
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from imdsfs import (
    ClientConfig,
    ConfigError,
    DeadlineExceeded,
    Forbidden,
    ImdsClient,
    NotFound,
    ResponseTooLarge,
    Throttled,
    TokenError,
    TokenManager,
    Unavailable,
    resolve_endpoint,
)
from imdsfs._transport import _read_bounded
from imdsfs.emulator import Emulator, ManualClock
from imdsfs.providers.gce import GceProvider

from .conftest import MakeClient, gets

INSTANCE_ID = "instance-id"  # a mount path: what the client is asked for
IMDS_INSTANCE_ID = "meta-data/instance-id"  # where the emulator keeps it
WIRE_INSTANCE_ID = "/latest/meta-data/instance-id"
TOKEN_PATH = "/latest/api/token"


async def current_token(client: ImdsClient) -> str | None:
    """The IMDSv2 token the client holds now (None: IMDSv1)."""
    manager = client.authenticator
    assert isinstance(manager, TokenManager)
    return await manager.get()


def puts(emu: Emulator) -> int:
    return emu.counters.count(method="PUT", path=TOKEN_PATH)


# -- reading -------------------------------------------------------------------------------


async def test_get_returns_the_exact_bytes_and_when_they_arrived(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator)
    before = trio.current_time()
    response = await client.get(INSTANCE_ID)
    assert response.path == INSTANCE_ID
    assert response.body == emulator.get_bytes(IMDS_INSTANCE_ID)
    assert before <= response.fetched_at <= trio.current_time()


async def test_binary_user_data_is_returned_byte_for_byte(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.set("user-data", gzip.compress(b"#!/bin/sh\r\necho \x00\xff\n" * 50))
    response = await make_client(emulator).get("user-data")
    assert response.body == emulator.get_bytes("user-data")


async def test_listing_keeps_the_wire_format_without_a_trailing_newline(
    emulator: Emulator, make_client: MakeClient
) -> None:
    response = await make_client(emulator).get("placement/")
    assert response.body == emulator.get_bytes("meta-data/placement/")
    assert b"\nregion" in response.body
    assert not response.body.endswith(b"\n")


async def test_not_found_is_raised_at_once_without_a_retry(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator)
    with pytest.raises(NotFound):
        await client.get("no-such-thing")
    assert gets(emulator, "meta-data/no-such-thing") == 1
    assert client.statistics()["errors.not_found"] == 1


async def test_403_is_forbidden_without_a_retry(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.faults.fail_next(1, status=403, path=WIRE_INSTANCE_ID)
    with pytest.raises(Forbidden):
        await make_client(emulator).get(INSTANCE_ID)
    assert gets(emulator, IMDS_INSTANCE_ID) == 1


@pytest.mark.parametrize(
    "path",
    [
        "../user-data",
        "meta-data/../user-data",
        "meta-data/./instance-id",
        "meta-data//instance-id",
        "/meta-data/instance-id",
        "/",
        "meta-data/instance-id?x=1",
        "meta-data/instance-id#x",
        "meta-data/%2e%2e/x",
        "meta-data/a\x00b",
        "meta-data/a\nb",
    ],
)
async def test_invalid_path_is_refused_before_any_request(
    emulator: Emulator, make_client: MakeClient, path: str
) -> None:
    client = make_client(emulator)
    with pytest.raises(ConfigError, match="invalid IMDS path"):
        await client.get(path)
    assert emulator.counters.count() == 0


async def test_trailing_slash_and_the_latest_root_are_valid_paths(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator)
    assert (await client.get("")).body == emulator.get_bytes("meta-data/")  # the mount root
    assert (await client.get("dynamic/")).body == emulator.get_bytes("dynamic/")


# -- tokens --------------------------------------------------------------------------------


async def test_concurrent_and_sequential_gets_share_one_token(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator)
    async with trio.open_nursery() as nursery:
        for _ in range(32):
            nursery.start_soon(client.get, INSTANCE_ID)
    for _ in range(5):
        await client.get(INSTANCE_ID)
    assert puts(emulator) == 1
    assert gets(emulator, IMDS_INSTANCE_ID) == 37
    assert client.statistics()["token_puts"] == 1


async def test_token_is_renewed_once_when_ten_percent_of_its_ttl_remains(
    emulator: Emulator, make_client: MakeClient, mock_clock: trio.testing.MockClock
) -> None:
    client = make_client(emulator, token_ttl=1000)  # renewed once less than 100 s remain
    await client.get(INSTANCE_ID)
    mock_clock.jump(899)
    await client.get(INSTANCE_ID)
    assert puts(emulator) == 1
    mock_clock.jump(2)
    async with trio.open_nursery() as nursery:
        for _ in range(16):
            nursery.start_soon(client.get, INSTANCE_ID)
    assert puts(emulator) == 2
    assert gets(emulator, IMDS_INSTANCE_ID) == 18


async def test_revoked_token_is_replaced_once_and_the_read_succeeds(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator)
    await client.get(INSTANCE_ID)
    emulator.revoke_tokens()
    response = await client.get(INSTANCE_ID)
    assert response.body == emulator.get_bytes(IMDS_INSTANCE_ID)
    assert puts(emulator) == 2
    assert emulator.counters.count(method="GET", status=401) == 1
    assert gets(emulator, IMDS_INSTANCE_ID) == 3


async def test_token_expired_on_the_server_clock_is_replaced(
    make_emulator: Callable[..., Emulator],
    emulator_clock: ManualClock,
    make_client: MakeClient,
) -> None:
    emu = make_emulator(clock=emulator_clock)
    client = make_client(emu, token_ttl=60)
    await client.get(INSTANCE_ID)
    emulator_clock.advance(61)  # the server thinks the token expired; our clock disagrees
    await client.get(INSTANCE_ID)
    assert puts(emu) == 2
    assert emu.counters.count(method="GET", status=401) == 1


async def test_401_that_persists_with_a_fresh_token_is_forbidden(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.faults.fail_next(2, status=401, path=WIRE_INSTANCE_ID)
    with pytest.raises(Forbidden, match="401"):
        await make_client(emulator).get(INSTANCE_ID)
    assert gets(emulator, IMDS_INSTANCE_ID) == 2
    assert puts(emulator) == 2


async def test_hop_limit_gives_a_token_error_that_says_how_to_fix_it(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.hop_limit_exceeded = True
    client = make_client(emulator, read_timeout=0.3)
    with pytest.raises(TokenError, match="hop limit") as caught:
        await client.get(INSTANCE_ID)
    assert "--http-put-response-hop-limit 2" in str(caught.value)
    assert puts(emulator) == 2  # one retry: a single unanswered PUT may be a stall
    assert gets(emulator, IMDS_INSTANCE_ID) == 0


async def test_token_request_rejected_as_malformed_is_a_token_error(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.faults.fail_next(1, status=400, path=TOKEN_PATH)
    with pytest.raises(TokenError, match="400"):
        await make_client(emulator).get(INSTANCE_ID)
    assert gets(emulator, IMDS_INSTANCE_ID) == 0


async def test_one_stalled_token_request_is_retried_not_taken_for_the_hop_limit(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.faults.stall_next(1, seconds=30, path=TOKEN_PATH)
    client = make_client(emulator, read_timeout=0.3)
    assert (await client.get(INSTANCE_ID)).body == emulator.get_bytes(IMDS_INSTANCE_ID)
    assert puts(emulator) == 2


async def test_token_request_server_error_is_retried(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.faults.fail_next(1, status=500, path=TOKEN_PATH)
    await make_client(emulator).get(INSTANCE_ID)
    assert puts(emulator) == 2
    assert gets(emulator, IMDS_INSTANCE_ID) == 1


async def test_tokens_never_appear_in_logs(
    emulator: Emulator, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    client = make_client(emulator)
    await client.get(INSTANCE_ID)
    first = await current_token(client)
    emulator.revoke_tokens()
    await client.get(INSTANCE_ID)
    second = await current_token(client)
    assert first is not None
    assert second is not None
    assert first != second
    assert any(r.name.startswith("imdsfs.") for r in caplog.records)  # we did log, at DEBUG
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    for token in (first, second):
        assert token not in caplog.text
        assert all(token not in repr(r.args) for r in caplog.records)


async def test_a_token_error_is_remembered_so_reads_fail_fast_for_a_while(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.hop_limit_exceeded = True
    client = make_client(emulator, read_timeout=0.3, token_retry_after=1.0)
    with pytest.raises(TokenError, match="hop limit"):
        await client.get(INSTANCE_ID)
    for _ in range(10):
        started = trio.current_time()
        with pytest.raises(TokenError, match="hop limit"):
            await client.get(INSTANCE_ID)
        assert trio.current_time() - started < 0.1  # not another 0.3 s wait on the PUT
    assert puts(emulator) == 2  # the PUT and its retry
    emulator.hop_limit_exceeded = False
    await trio.sleep(1.0)
    assert (await client.get(INSTANCE_ID)).body == emulator.get_bytes(IMDS_INSTANCE_ID)
    assert puts(emulator) == 3


async def test_a_token_response_without_its_ttl_header_is_used_for_the_ttl_asked(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.token_ttl_header = False
    client = make_client(emulator, token_ttl=60)
    for _ in range(3):
        assert (await client.get(INSTANCE_ID)).body == emulator.get_bytes(IMDS_INSTANCE_ID)
    assert puts(emulator) == 1


async def test_an_oversized_token_is_refused(emulator: Emulator, make_client: MakeClient) -> None:
    emulator.set_raw("api/token", b"t" * 5000)
    with pytest.raises(TokenError, match="unusable token"):
        await make_client(emulator).get(INSTANCE_ID)
    assert gets(emulator, IMDS_INSTANCE_ID) == 0


# -- IMDSv1 fallback -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404, 405])
async def test_imdsv2_unavailable_is_a_token_error_unless_v1_is_allowed(
    make_emulator: Callable[..., Emulator], make_client: MakeClient, status: int
) -> None:
    emu = make_emulator(tokens="optional")
    emu.faults.fail_next(1, status=status, path=TOKEN_PATH)
    with pytest.raises(TokenError, match="IMDSv1 fallback is not enabled"):
        await make_client(emu).get(INSTANCE_ID)
    assert gets(emu, IMDS_INSTANCE_ID) == 0


@pytest.mark.parametrize("status", [403, 404, 405])
async def test_imdsv2_unavailable_falls_back_to_v1_when_allowed(
    make_emulator: Callable[..., Emulator], make_client: MakeClient, status: int
) -> None:
    emu = make_emulator(tokens="optional")
    emu.faults.fail_next(1, status=status, path=TOKEN_PATH)
    client = make_client(emu, allow_imdsv1=True)
    assert (await client.get(INSTANCE_ID)).body == emu.get_bytes(IMDS_INSTANCE_ID)
    assert (await client.get(INSTANCE_ID)).body == emu.get_bytes(IMDS_INSTANCE_ID)
    assert await current_token(client) is None
    assert puts(emu) == 1  # the fallback is remembered, not re-asked on every read


@pytest.mark.parametrize("value", ["true", "TRUE", "True"])
async def test_v1_disabled_by_environment_overrides_allow_imdsv1(
    make_emulator: Callable[..., Emulator], make_client: MakeClient, value: str
) -> None:
    emu = make_emulator(tokens="optional")
    emu.faults.fail_next(1, status=405, path=TOKEN_PATH)
    client = make_client(emu, allow_imdsv1=True, environ={"AWS_EC2_METADATA_V1_DISABLED": value})
    with pytest.raises(TokenError, match="AWS_EC2_METADATA_V1_DISABLED"):
        await client.get(INSTANCE_ID)
    assert gets(emu, IMDS_INSTANCE_ID) == 0


async def test_v1_fallback_ends_when_imds_starts_requiring_tokens(
    make_emulator: Callable[..., Emulator], make_client: MakeClient
) -> None:
    emu = make_emulator(tokens="optional")
    emu.faults.fail_next(1, status=405, path=TOKEN_PATH)
    client = make_client(emu, allow_imdsv1=True)
    await client.get(INSTANCE_ID)
    emu.tokens = "required"
    assert (await client.get(INSTANCE_ID)).body == emu.get_bytes(IMDS_INSTANCE_ID)
    assert puts(emu) == 2
    assert await current_token(client) is not None


# -- retries, throttling, deadline ---------------------------------------------------------


async def test_server_errors_are_retried_until_success(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.faults.fail_next(2, status=500, path=WIRE_INSTANCE_ID)
    client = make_client(emulator)
    assert (await client.get(INSTANCE_ID)).body == emulator.get_bytes(IMDS_INSTANCE_ID)
    assert gets(emulator, IMDS_INSTANCE_ID) == 3
    assert client.statistics()["retries"] == 2


async def test_server_errors_past_max_attempts_are_unavailable(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.faults.fail_next(10, status=502, path=WIRE_INSTANCE_ID)
    client = make_client(emulator, max_attempts=3)
    with pytest.raises(Unavailable) as caught:
        await client.get(INSTANCE_ID)
    assert type(caught.value) is Unavailable
    assert gets(emulator, IMDS_INSTANCE_ID) == 3
    assert client.statistics()["errors.unavailable"] == 1


async def test_connection_reset_is_retried(emulator: Emulator, make_client: MakeClient) -> None:
    emulator.faults.reset_next(1, path=WIRE_INSTANCE_ID)
    assert (await make_client(emulator).get(INSTANCE_ID)).body == emulator.get_bytes(
        IMDS_INSTANCE_ID
    )
    assert gets(emulator, IMDS_INSTANCE_ID) == 2


async def test_read_timeout_is_retried(emulator: Emulator, make_client: MakeClient) -> None:
    emulator.faults.stall_next(1, 30, path=WIRE_INSTANCE_ID)
    client = make_client(emulator, read_timeout=0.2)
    assert (await client.get(INSTANCE_ID)).body == emulator.get_bytes(IMDS_INSTANCE_ID)
    assert gets(emulator, IMDS_INSTANCE_ID) == 2


async def test_connection_refused_is_retried_then_unavailable() -> None:
    config = ClientConfig(endpoint=f"http://127.0.0.1:{_dead_port()}", max_attempts=2)
    async with ImdsClient(config, environ={}) as client:
        with pytest.raises(Unavailable, match="ConnectError"):
            await client.get(INSTANCE_ID)
        assert client.statistics()["requests"] == 2  # the token PUT, twice


async def test_throttling_is_retried_after_the_retry_after_delay(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.faults.throttle_next(1, status=503, retry_after=1, path=WIRE_INSTANCE_ID)
    client = make_client(emulator, backoff_base=0.001)
    await client.get("ami-id")  # the token first, so only the GET is timed
    start = time.monotonic()
    assert (await client.get(INSTANCE_ID)).body == emulator.get_bytes(IMDS_INSTANCE_ID)
    assert time.monotonic() - start >= 0.95
    assert gets(emulator, IMDS_INSTANCE_ID) == 2


@pytest.mark.parametrize("status", [429, 503])
async def test_throttling_past_max_attempts_is_throttled(
    emulator: Emulator, make_client: MakeClient, status: int
) -> None:
    emulator.faults.throttle_next(10, status=status, path=WIRE_INSTANCE_ID)
    client = make_client(emulator, max_attempts=3)
    with pytest.raises(Throttled):
        await client.get(INSTANCE_ID)
    assert gets(emulator, IMDS_INSTANCE_ID) == 3
    assert client.statistics()["errors.throttled"] == 1


async def test_retry_after_beyond_the_deadline_fails_at_once_as_throttled(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.faults.throttle_next(1, retry_after=30, path=WIRE_INSTANCE_ID)
    start = time.monotonic()
    with pytest.raises(Throttled):
        await make_client(emulator, timeout=2.0).get(INSTANCE_ID)
    assert time.monotonic() - start < 1.5
    assert gets(emulator, IMDS_INSTANCE_ID) == 1


async def test_deadline_bounds_the_whole_call(emulator: Emulator, make_client: MakeClient) -> None:
    emulator.faults.stall_next(5, 30, path=WIRE_INSTANCE_ID)
    client = make_client(emulator, timeout=0.5, read_timeout=10)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await client.get(INSTANCE_ID)
    assert time.monotonic() - start < 0.5 + 0.5  # a hang guard, not a speed claim
    assert client.statistics()["errors.deadline_exceeded"] == 1


# -- limits and isolation ------------------------------------------------------------------


async def test_body_over_max_body_is_refused_without_a_retry(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.set("meta-data/big", b"x" * 4097)
    emulator.set("meta-data/fits", b"x" * 4096)
    client = make_client(emulator, max_body=4096)
    assert len((await client.get("fits")).body) == 4096
    with pytest.raises(ResponseTooLarge):
        await client.get("big")
    assert gets(emulator, "meta-data/big") == 1


# Leaving httpx's body iterators half-consumed is the point here, and trio warns about such
# async generators when they are collected (encode/httpx#3686). IMDS always sends
# Content-Length, which is refused before any byte is read; this is the fallback path.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_body_without_content_length_stops_being_read_past_the_bound() -> None:
    pulled = 0

    async def megabyte() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(1024):
            pulled += 1
            yield b"x" * 1024

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=megabyte())

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http,
        http.stream("GET", "http://imds/latest/user-data") as response,
    ):
        assert "Content-Length" not in response.headers
        with pytest.raises(ResponseTooLarge):
            await _read_bounded(response, "http://imds/latest/user-data", 10 * 1024)
    assert pulled == 11


async def test_proxy_environment_variables_are_ignored(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_proxy = f"http://127.0.0.1:{_dead_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.setenv("all_proxy", dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with ImdsClient(ClientConfig(endpoint=emulator.url)) as client:  # os.environ
        assert (await client.get(INSTANCE_ID)).body == emulator.get_bytes(IMDS_INSTANCE_ID)


async def test_requests_in_flight_never_exceed_max_concurrency(
    emulator: Emulator, make_client: MakeClient
) -> None:
    emulator.faults.latency = 0.1
    client = make_client(emulator, max_concurrency=4)
    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(16):
            nursery.start_soon(client.get, INSTANCE_ID)
    assert client.statistics()["max_in_flight"] == 4
    assert time.monotonic() - start >= (1 + 16 / 4) * 0.1 * 0.9  # the PUT, then 4 waves
    assert client.statistics()["in_flight"] == 0


async def test_statistics_count_calls_requests_retries_and_errors(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator)
    emulator.faults.fail_next(1, status=500, path=WIRE_INSTANCE_ID)
    await client.get(INSTANCE_ID)
    with pytest.raises(NotFound):
        await client.get("nothing")
    stats = client.statistics()
    assert stats["calls"] == 2
    assert stats["requests"] == emulator.counters.count() == 4  # PUT, 500, 200, 404
    assert stats["token_puts"] == 1
    assert stats["retries"] == 1
    assert stats["errors.not_found"] == 1
    assert stats["errors.unavailable"] == stats["errors.throttled"] == 0


async def test_a_200_html_page_is_not_a_value(emulator: Emulator, make_client: MakeClient) -> None:
    emulator.set_raw(
        IMDS_INSTANCE_ID, b"<html>Sign in to continue</html>", content_type="text/html"
    )
    with pytest.raises(Unavailable, match="HTML"):
        await make_client(emulator).get(INSTANCE_ID)
    assert (
        gets(emulator, IMDS_INSTANCE_ID) == 1
    )  # something in the way will not change its mind on a retry


@pytest.mark.parametrize("path", [IMDS_INSTANCE_ID, "api/token"])
async def test_redirects_are_not_followed(
    emulator: Emulator, make_emulator: Callable[..., Emulator], make_client: MakeClient, path: str
) -> None:
    elsewhere = make_emulator()
    target = f"{elsewhere.url}/latest/{path}"
    emulator.set_raw(path, status=302, headers={"Location": target})
    with pytest.raises(Unavailable, match="302"):
        await make_client(emulator).get(INSTANCE_ID)
    assert elsewhere.counters.total == 0


# -- configuration -------------------------------------------------------------------------

IPV4, IPV6 = "http://169.254.169.254", "http://[fd00:ec2::254]"


@pytest.mark.parametrize(
    ("endpoint", "mode", "environ", "expected"),
    [
        (None, None, {}, IPV4),
        (None, "IPv6", {}, IPV6),
        (None, "ipv6", {}, IPV6),
        (None, None, {"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"}, IPV6),
        (None, "IPv4", {"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"}, IPV4),
        (None, "IPv6", {"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://env:1"}, "http://env:1"),
        ("http://flag:2/", None, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://env:1"}, "http://flag:2"),
        (None, None, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": ""}, IPV4),
        ("http://[::1]:8080", None, {}, "http://[::1]:8080"),
        ("https://imds.example", None, {}, "https://imds.example"),
    ],
)  # fmt: skip
def test_endpoint_is_the_flag_then_the_environment_then_the_mode(
    endpoint: str | None, mode: str | None, environ: dict[str, str], expected: str
) -> None:
    config = ClientConfig(endpoint=endpoint, endpoint_mode=mode)
    assert resolve_endpoint(config, environ) == expected


@pytest.mark.parametrize(
    ("endpoint", "mode", "environ"),
    [
        ("", None, {}),
        ("169.254.169.254", None, {}),
        ("ftp://169.254.169.254", None, {}),
        ("http://", None, {}),
        ("http://host:99999", None, {}),
        ("http://host/?q=1", None, {}),
        ("http://host/#frag", None, {}),
        (None, "IPv5", {}),
        (None, None, {"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "both"}),
        (None, None, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": "not a url"}),
    ],
)
def test_bad_endpoint_or_mode_is_a_config_error(
    endpoint: str | None, mode: str | None, environ: dict[str, str]
) -> None:
    with pytest.raises(ConfigError):
        resolve_endpoint(ClientConfig(endpoint=endpoint, endpoint_mode=mode), environ)


def test_client_resolves_its_endpoint_from_the_given_environment() -> None:
    environ = {"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"}
    assert ImdsClient(environ=environ).endpoint == IPV6


@pytest.mark.parametrize(
    "options",
    [
        {"token_ttl": 0},
        {"token_ttl": 21601},
        {"timeout": 0},
        {"read_timeout": -1},
        {"connect_timeout": float("nan")},
        {"max_attempts": 0},
        {"max_concurrency": 0},
        {"max_body": 0},
        {"backoff_base": -0.1},
    ],
)
def test_out_of_range_option_is_a_config_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ClientConfig(**options)


def _dead_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- connections ---------------------------------------------------------------------------


class _DoubleAnswerServer(socketserver.ThreadingTCPServer):
    """Answers every request correctly, then sends one more answer on the same connection and
    keeps it open: a client that reused the connection would take that one for its next
    request's. Counts the connections it accepted."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _DoubleAnswer)
        self.connections = 0


class _DoubleAnswer(socketserver.StreamRequestHandler):
    server: _DoubleAnswerServer

    def handle(self) -> None:
        self.server.connections += 1
        while request := self.rfile.readline():
            while self.rfile.readline() not in (b"\r\n", b""):
                pass  # headers
            path = request.split()[1].decode()
            body = b"TOKEN-abc" if path.endswith("/api/token") else f"value of {path}".encode()
            answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            if path.endswith("/api/token"):
                answer += b"X-Aws-Ec2-Metadata-Token-Ttl-Seconds: 21600\r\n"
            answer += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            self.wfile.write(answer + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")


async def test_no_connection_is_reused_so_a_server_answering_twice_cannot_swap_bodies() -> None:
    server = _DoubleAnswerServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = ClientConfig(endpoint=f"http://127.0.0.1:{server.server_address[1]}")
        async with ImdsClient(config, environ={}) as client:
            for name in ("instance-id", "ami-id", "instance-type"):
                response = await client.get(name)
                assert response.body == f"value of /latest/meta-data/{name}".encode()
        assert server.connections == 4  # the token PUT and each GET on a connection of its own
    finally:
        server.shutdown()
        server.server_close()


# -- a 400 the provider can cure -----------------------------------------------------------


class _VersionedProvider(GceProvider):
    """Asks with a version in the URL; a 400 saying ``use old`` makes it ask with ``old``."""

    version = "new"

    def url(self, path: str) -> str:
        return f"{self.endpoint}/{path}?v={self.version}"

    def renegotiate(self, url: str, body: bytes) -> bool:
        if body != b"use old" or self.version == "old":
            return False
        self.version = "old"
        return True


async def _versioned_get(refusal: bytes, old_works: bool = True) -> tuple[list[str], Any]:
    """GET ``zone`` from a service that refuses version ``new`` with *refusal*: the URLs
    asked for, and the answer (or the error raised)."""
    asked: list[str] = []

    def service(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        ok = old_works and request.url.params["v"] == "old"
        body = b"zone-a" if ok else refusal
        return httpx.Response(200 if ok else 400, stream=httpx.ByteStream(body))

    config = ClientConfig(provider="gce", endpoint="http://imds.test")
    provider = _VersionedProvider(config, environ={})
    async with ImdsClient(config, provider=provider, transport=httpx.MockTransport(service)) as c:
        try:
            return asked, (await c.get("zone")).body
        except Unavailable as exc:
            return asked, exc


async def test_a_400_the_provider_can_cure_is_asked_again_its_new_way() -> None:
    asked, answer = await _versioned_get(b"use old")
    assert (asked, answer) == (
        ["http://imds.test/zone?v=new", "http://imds.test/zone?v=old"],
        b"zone-a",
    )


async def test_a_400_the_provider_cannot_cure_fails_at_once() -> None:
    asked, answer = await _versioned_get(b"bad request")
    assert len(asked) == 1
    assert isinstance(answer, Unavailable)


async def test_a_400_is_renegotiated_once_per_read() -> None:
    asked, answer = await _versioned_get(b"use old", old_works=False)
    assert len(asked) == 2
    assert isinstance(answer, Unavailable)
