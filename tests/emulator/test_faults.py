"""Fault injection, request counters and lifecycle of the emulator."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from imdsfs.emulator import Emulator, Faults

from ..conftest import MakeEmulator, imds_get, imds_request, imds_token

INSTANCE_ID = "/latest/meta-data/instance-id"
TTL = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}


@pytest.fixture
def v1(make_emulator: MakeEmulator) -> Emulator:
    """Tokens optional, so each test request is exactly one HTTP request."""
    return make_emulator(tokens="optional", seed=1234)


def statuses(emu: Emulator, n: int, path: str = INSTANCE_ID) -> list[int]:
    return [imds_get(emu, path, token=False).status_code for _ in range(n)]


def test_latency_delays_every_response(v1: Emulator) -> None:
    v1.faults.latency = 0.2
    started = time.monotonic()
    assert imds_get(v1, INSTANCE_ID, token=False).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_error_rate_gives_a_plausible_share_of_500s(v1: Emulator) -> None:
    v1.faults.error_rate = 0.3
    results = statuses(v1, 100)
    assert set(results) == {200, 500}
    assert 15 <= results.count(500) <= 45
    assert v1.counters.count(status=500) == results.count(500)


def test_same_seed_gives_the_same_fault_sequence(make_emulator: MakeEmulator) -> None:
    runs = []
    for _ in range(2):
        emu = make_emulator(tokens="optional", seed=99, faults=Faults(error_rate=0.5))
        runs.append(statuses(emu, 20))
    assert runs[0] == runs[1]
    assert 500 in runs[0]


def test_reset_rate_resets_the_connection(v1: Emulator) -> None:
    v1.faults.reset_rate = 1.0
    with pytest.raises(httpx.TransportError):
        imds_get(v1, INSTANCE_ID, token=False)
    assert v1.counters.count(path=INSTANCE_ID, status=0) == 1


def test_throttling_answers_the_status_with_retry_after(v1: Emulator) -> None:
    v1.faults = Faults(throttle_rate=1.0, throttle_status=429, retry_after=3)
    response = imds_get(v1, INSTANCE_ID, token=False)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert response.headers["Server"] == "EC2ws"


def test_throttling_defaults_to_503_without_retry_after(v1: Emulator) -> None:
    v1.faults.throttle_rate = 1.0
    response = imds_get(v1, INSTANCE_ID, token=False)
    assert response.status_code == 503
    assert "Retry-After" not in response.headers


def test_stall_outlasts_the_client_timeout_and_stop_is_still_fast(v1: Emulator) -> None:
    v1.faults.stall_rate = 1.0  # 30 s stalls
    with pytest.raises(httpx.ReadTimeout):
        imds_request(v1, INSTANCE_ID, token=False, timeout=0.2)
    started = time.monotonic()
    v1.stop()
    assert time.monotonic() - started < 1.0


def test_stop_interrupts_requests_still_waiting(v1: Emulator) -> None:
    v1.faults.stall_rate = 1.0
    errors: list[Exception] = []

    def client() -> None:
        try:
            imds_request(v1, INSTANCE_ID, token=False, timeout=10)
        except httpx.TransportError as error:
            errors.append(error)

    thread = threading.Thread(target=client)
    thread.start()
    while v1.counters.count() == 0:
        time.sleep(0.01)
    started = time.monotonic()
    v1.stop()
    thread.join(timeout=5)
    assert time.monotonic() - started < 1.0
    assert len(errors) == 1  # the client saw the connection close, not a 10 s timeout
    assert v1.counters.count(status=0) == 1


def test_stall_next_answers_normally_after_the_stall(v1: Emulator) -> None:
    v1.faults.stall_next(seconds=0.2)
    started = time.monotonic()
    response = imds_get(v1, INSTANCE_ID, token=False)
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 200
    assert response.content == v1.get_bytes("meta-data/instance-id")


def test_fail_next_is_consumed_exactly_n_times(v1: Emulator) -> None:
    v1.faults.fail_next(2, status=502)
    assert statuses(v1, 4) == [502, 502, 200, 200]


def test_one_shots_are_consumed_in_order(v1: Emulator) -> None:
    v1.faults.throttle_next(1, status=429, retry_after=7)
    v1.faults.fail_next(1)
    first = imds_get(v1, INSTANCE_ID, token=False)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    assert statuses(v1, 2) == [500, 200]


def test_one_shot_path_glob_only_hits_matching_requests(v1: Emulator) -> None:
    v1.faults.fail_next(1, path="/latest/meta-data/placement/*")
    assert statuses(v1, 1) == [200]
    assert statuses(v1, 2, "/latest/meta-data/placement/region") == [500, 200]


def test_one_shots_hit_the_token_put_by_default(emulator: Emulator) -> None:
    emulator.faults.fail_next(1)
    put = imds_request(emulator, "/latest/api/token", method="PUT", token=False, headers=TTL)
    assert put.status_code == 500
    emulator.faults.reset_next(1, path="/latest/api/token")
    with pytest.raises(httpx.TransportError):
        imds_token(emulator)
    assert imds_get(emulator, INSTANCE_ID).status_code == 200
    assert emulator.counters.tokens_issued == 1


def test_random_faults_spare_the_token_put_unless_included(emulator: Emulator) -> None:
    emulator.faults.error_rate = 1.0
    put = imds_request(emulator, "/latest/api/token", method="PUT", token=False, headers=TTL)
    assert put.status_code == 200
    emulator.faults.include_token = True
    put = imds_request(emulator, "/latest/api/token", method="PUT", token=False, headers=TTL)
    assert put.status_code == 500


def test_one_shot_n_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Faults().fail_next(0)


def test_counters_by_method_path_and_status(emulator: Emulator) -> None:
    token = imds_token(emulator)
    imds_get(emulator, INSTANCE_ID, token=token)
    imds_get(emulator, "/latest/meta-data/nope", token=token)
    imds_get(emulator, INSTANCE_ID, token=False)
    imds_request(emulator, INSTANCE_ID, method="HEAD", token=token)
    counters = emulator.counters
    assert counters.count() == 5
    assert counters.count(method="PUT", path="/latest/api/token", status=200) == 1
    assert counters.count(method="GET") == 3
    assert counters.count(path=INSTANCE_ID) == 3
    assert counters.count(method="GET", path=INSTANCE_ID, status=200) == 1
    assert counters.count(status=401) == 1
    assert counters.count(status=404) == 1
    assert counters.count(method="HEAD", status=200) == 1
    assert counters.paths() == [INSTANCE_ID, "/latest/meta-data/nope", INSTANCE_ID]
    assert counters.paths("PUT") == ["/latest/api/token"]
    assert counters.tokens_issued == 1
    counters.reset()
    assert counters.count() == 0
    assert counters.tokens_issued == 0
    assert counters.paths() == []


def test_stop_is_idempotent_and_the_port_is_released(make_emulator: MakeEmulator) -> None:
    emu = make_emulator()
    emu.stop()
    emu.stop()
    with pytest.raises(httpx.ConnectError):
        imds_get(emu, INSTANCE_ID, token=False)


def emulator_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("imds-emulator-worker")]


def test_stalled_requests_do_not_hold_up_others(v1: Emulator) -> None:
    v1.faults.stall_next(8, seconds=30)

    def stalled_client() -> None:
        with pytest.raises(httpx.TransportError):  # the stop below closes the connection
            imds_request(v1, INSTANCE_ID, token=False, timeout=10)

    stalled = [threading.Thread(target=stalled_client) for _ in range(8)]
    for thread in stalled:
        thread.start()
    while v1.counters.count() < 8:
        time.sleep(0.01)
    started = time.monotonic()
    assert statuses(v1, 20) == [200] * 20
    assert time.monotonic() - started < 5
    v1.stop()
    for thread in stalled:
        thread.join(timeout=5)


def test_sequential_requests_reuse_one_worker(v1: Emulator) -> None:
    before = set(emulator_workers())
    assert statuses(v1, 50) == [200] * 50
    assert 1 <= len(set(emulator_workers()) - before) <= 2  # not one thread per connection


def test_stop_ends_every_worker(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(tokens="optional")
    done = [threading.Thread(target=statuses, args=(emu, 5)) for _ in range(16)]
    for thread in done:
        thread.start()
    for thread in done:
        thread.join()
    workers = emulator_workers()
    assert workers
    emu.stop()
    for worker in workers:
        worker.join(timeout=2)
    assert not any(worker.is_alive() for worker in workers)


def test_start_twice_is_an_error(emulator: Emulator) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        emulator.start()


async def test_async_context_manager_in_trio() -> None:
    async with Emulator(tokens="optional") as emu, httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(emu.url + INSTANCE_ID)
    assert response.status_code == 200
    assert response.content == emu.get_bytes("meta-data/instance-id")
