"""MetadataCache against the emulator: TTLs, single flight, negative entries, stale-on-error.

Tests that move time take pytest-trio's ``mock_clock`` (a MockClock that moves only on
``jump``); they give the client ``backoff_base=0`` because a retry's sleep would otherwise
never end, and they never jump while a request is on the wire.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from imdsfs import (
    CachedValue,
    ClientConfig,
    ConfigError,
    Forbidden,
    ImdsClient,
    MetadataCache,
    NotFound,
    TtlPolicy,
    Unavailable,
)
from imdsfs.emulator import Emulator

from .conftest import MakeClient, gets

# Mount paths, as the cache is asked for them; `imds` gives where the emulator keeps them.
INSTANCE_ID = "instance-id"
LOCAL_IPV4 = "local-ipv4"
ROLE_INFO = "iam/info"
SPOT_ACTION = "spot/instance-action"


def imds(path: str) -> str:
    return f"meta-data/{path}"


MakeCache = Callable[..., MetadataCache]


@pytest.fixture
def make_cache(emulator: Emulator, make_client: MakeClient) -> MakeCache:
    """``make_cache(*rules, stale_bound=..., holdoff=..., **client_config)`` on the default
    emulator. The hold-off after a failure is off unless a test asks for it."""

    def make(
        *rules: str, stale_bound: float = 300.0, holdoff: float = 0.0, **config: Any
    ) -> MetadataCache:
        client = make_client(emulator, **{"backoff_base": 0.0, **config})
        policy = TtlPolicy.from_rules(rules, builtin=client.provider.ttl_rules)
        return MetadataCache(client, policy, stale_bound=stale_bound, holdoff=holdoff)

    return make


# -- TTL -----------------------------------------------------------------------------------


async def test_value_is_served_from_cache_until_its_ttl_runs_out(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache("instance-id=10")
    first = await cache.get(INSTANCE_ID)
    assert first.source == "live"
    assert first.body == emulator.get_bytes(imds(INSTANCE_ID))
    assert first.expires_at == first.fetched_at + 10
    mock_clock.jump(9.9)
    again = await cache.get(INSTANCE_ID)
    assert (again.source, again.body, again.fetched_at) == ("cache", first.body, first.fetched_at)
    assert gets(emulator, imds(INSTANCE_ID)) == 1
    mock_clock.jump(0.1)
    assert (await cache.get(INSTANCE_ID)).source == "live"
    assert gets(emulator, imds(INSTANCE_ID)) == 2


async def test_each_path_expires_after_the_ttl_its_policy_gives(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache()  # the defaults: 6 h, 60 s and 5 s for these three
    paths = (INSTANCE_ID, LOCAL_IPV4, ROLE_INFO)
    for path in paths:
        await cache.get(path)
    mock_clock.jump(6)
    for path in paths:
        await cache.get(path)
    assert [gets(emulator, imds(path)) for path in paths] == [1, 1, 2]
    mock_clock.jump(60)
    for path in paths:
        await cache.get(path)
    assert [gets(emulator, imds(path)) for path in paths] == [1, 2, 3]


async def test_zero_ttl_fetches_on_every_read(emulator: Emulator, make_cache: MakeCache) -> None:
    cache = make_cache("local-ipv4=0")
    for _ in range(3):
        assert (await cache.get(LOCAL_IPV4)).source == "live"
    assert gets(emulator, imds(LOCAL_IPV4)) == 3


# -- single flight -------------------------------------------------------------------------


async def test_concurrent_cold_readers_share_one_request(
    emulator: Emulator, make_cache: MakeCache
) -> None:
    emulator.faults.latency = 0.05  # keep the first request open while the others arrive
    cache = make_cache()
    results: list[CachedValue] = []

    async def read() -> None:
        results.append(await cache.get(INSTANCE_ID))

    async with trio.open_nursery() as nursery:
        for _ in range(64):
            nursery.start_soon(read)
    assert gets(emulator, imds(INSTANCE_ID)) == 1
    assert len(results) == 64
    assert {value.body for value in results} == {emulator.get_bytes(imds(INSTANCE_ID))}
    stats = cache.statistics()
    assert (stats["misses"], stats["fetches"]) == (64, 1)


async def test_a_cancelled_reader_does_not_fail_the_others_waiting_on_it(
    emulator: Emulator, make_cache: MakeCache
) -> None:
    emulator.faults.latency = 0.2
    cache = make_cache()
    results: list[CachedValue] = []

    async def read() -> None:
        results.append(await cache.get(INSTANCE_ID))

    first = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_in_scope, cache, first)
        await trio.sleep(0.05)  # the first reader now leads the fetch
        for _ in range(4):
            nursery.start_soon(read)
        await trio.sleep(0.01)
        first.cancel()
    assert first.cancelled_caught
    assert len(results) == 4
    assert {value.body for value in results} == {emulator.get_bytes(imds(INSTANCE_ID))}


async def _read_in_scope(cache: MetadataCache, scope: trio.CancelScope) -> None:
    with scope:
        await cache.get(INSTANCE_ID)


async def test_requests_in_flight_stay_within_max_concurrency(
    emulator: Emulator, make_cache: MakeCache
) -> None:
    emulator.faults.latency = 0.1
    cache = make_cache(max_concurrency=4)
    paths = [f"tags/instance/missing-{i}" for i in range(32)]

    async def read(path: str) -> None:
        with contextlib.suppress(NotFound):  # absent paths cost a request all the same
            await cache.get(path)

    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        for path in paths:
            nursery.start_soon(read, path)
    elapsed = time.monotonic() - start
    assert sum(gets(emulator, imds(path)) for path in paths) == 32
    assert cache.statistics()["max_in_flight"] == 4
    # Seen from the server too: 32 requests of 0.1 s, 4 at a time, after the token PUT.
    assert elapsed >= (1 + 32 / 4) * 0.1 * 0.9


# -- negative entries ----------------------------------------------------------------------


async def test_not_found_is_cached_for_the_negative_ttl(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache("negative=2")
    with pytest.raises(NotFound):
        await cache.get(SPOT_ACTION)
    emulator.set(imds(SPOT_ACTION), '{"action": "terminate", "time": "2026-11-23T16:00:00Z"}')
    mock_clock.jump(1.9)
    with pytest.raises(NotFound):
        await cache.get(SPOT_ACTION)
    assert gets(emulator, imds(SPOT_ACTION)) == 1
    assert cache.peek(SPOT_ACTION) is None
    mock_clock.jump(0.1)
    value = await cache.get(SPOT_ACTION)
    assert value.body == emulator.get_bytes(imds(SPOT_ACTION))
    assert gets(emulator, imds(SPOT_ACTION)) == 2
    assert cache.statistics()["negative_hits"] == 1


async def test_expired_404s_are_let_go(
    make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    """Names a local user invents (a watch file of each) must not stay in the daemon."""
    cache = make_cache("negative=2")
    for index in range(50):
        with pytest.raises(NotFound):
            await cache.get(f"tags/instance/invented-{index}")
    assert cache.absent("tags/instance/invented-0")
    mock_clock.jump(2.5)
    with pytest.raises(NotFound):
        await cache.get("tags/instance/one-more")
    assert not any(cache.absent(f"tags/instance/invented-{index}") for index in range(50))
    assert cache.absent("tags/instance/one-more")


async def test_every_concurrent_reader_of_a_missing_path_gets_not_found(
    emulator: Emulator, make_cache: MakeCache
) -> None:
    emulator.faults.latency = 0.05
    cache = make_cache()
    outcomes: list[type[Exception]] = []

    async def read() -> None:
        try:
            await cache.get(SPOT_ACTION)
        except NotFound as exc:
            outcomes.append(type(exc))

    async with trio.open_nursery() as nursery:
        for _ in range(16):
            nursery.start_soon(read)
    assert outcomes == [NotFound] * 16
    assert gets(emulator, imds(SPOT_ACTION)) == 1


async def test_a_failure_is_never_cached_as_not_found(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache(max_attempts=1)
    emulator.faults.fail_next(1, status=500, path=f"/latest/{imds(INSTANCE_ID)}")
    with pytest.raises(Unavailable):
        await cache.get(INSTANCE_ID)
    assert (await cache.get(INSTANCE_ID)).source == "live"
    assert gets(emulator, imds(INSTANCE_ID)) == 2


async def test_a_path_that_disappears_is_not_served_stale_later(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache("spot/**=1", max_attempts=1)
    emulator.set(imds(SPOT_ACTION), "{}")
    await cache.get(SPOT_ACTION)
    emulator.delete(imds(SPOT_ACTION))
    mock_clock.jump(1)
    with pytest.raises(NotFound):
        await cache.get(SPOT_ACTION)
    mock_clock.jump(3)  # past the negative TTL
    emulator.faults.error_rate = 1.0
    with pytest.raises(Unavailable):
        await cache.get(SPOT_ACTION)


# -- stale on error ------------------------------------------------------------------------


async def test_last_good_value_is_served_stale_within_the_bound(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache("instance-id=10", stale_bound=60, max_attempts=1)
    good = await cache.get(INSTANCE_ID)
    emulator.faults.error_rate = 1.0
    mock_clock.jump(59)
    stale = await cache.get(INSTANCE_ID)
    assert (stale.source, stale.body, stale.fetched_at) == ("stale", good.body, good.fetched_at)
    assert cache.peek(INSTANCE_ID) is None  # stale is never reported as fresh
    mock_clock.jump(1)
    with pytest.raises(Unavailable):
        await cache.get(INSTANCE_ID)
    assert cache.statistics()["stale_serves"] == 1


async def test_stale_value_stands_in_for_a_missing_token_too(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache("instance-id=10", token_ttl=60, read_timeout=0.2)
    good = await cache.get(INSTANCE_ID)
    emulator.hop_limit_exceeded = True
    mock_clock.jump(60)  # value and token both expired: the next read needs a new token
    mock_clock.rate = 1.0  # let the unanswered PUT time out in real time
    value = await cache.get(INSTANCE_ID)
    assert (value.source, value.body) == ("stale", good.body)
    assert emulator.counters.count(method="PUT") == 3  # the first, then one retried


async def test_forbidden_is_not_masked_by_a_stale_value(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache("instance-id=10")
    await cache.get(INSTANCE_ID)
    mock_clock.jump(11)
    emulator.enabled = False  # IMDS turned off: 403, a decision rather than an outage
    with pytest.raises(Forbidden):
        await cache.get(INSTANCE_ID)


async def test_one_warning_per_outage_per_path(
    emulator: Emulator,
    make_cache: MakeCache,
    mock_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = make_cache("**=1", max_attempts=1)
    await cache.get(INSTANCE_ID)
    await cache.get(LOCAL_IPV4)

    async def outage() -> None:
        emulator.faults.error_rate = 1.0
        for _ in range(3):
            mock_clock.jump(1)
            assert (await cache.get(INSTANCE_ID)).source == "stale"
            assert (await cache.get(LOCAL_IPV4)).source == "stale"
        emulator.faults.error_rate = 0.0
        mock_clock.jump(1)
        assert (await cache.get(INSTANCE_ID)).source == "live"
        assert (await cache.get(LOCAL_IPV4)).source == "live"

    with caplog.at_level(logging.INFO, logger="imdsfs._cache"):
        await outage()
        await outage()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    warned_paths = sorted(r.getMessage().split(":")[0] for r in warnings)
    assert warned_paths == [
        f"/latest/{imds(p)}" for p in (INSTANCE_ID, INSTANCE_ID, LOCAL_IPV4, LOCAL_IPV4)
    ]
    assert cache.statistics()["stale_serves"] == 12


# -- hold-off after a failure --------------------------------------------------------------


async def test_after_a_failure_reads_get_the_stale_value_without_asking_imds(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache("**=1", holdoff=3, max_attempts=1)
    good = await cache.get(INSTANCE_ID)
    mock_clock.jump(1)
    emulator.faults.error_rate = 1.0
    for _ in range(10):
        assert (await cache.get(INSTANCE_ID)).body == good.body
    assert gets(emulator, imds(INSTANCE_ID)) == 2  # the first, and one failed refresh
    assert cache.statistics()["held_off"] == 9
    emulator.faults.error_rate = 0.0
    mock_clock.jump(3)
    assert (await cache.get(INSTANCE_ID)).source == "live"
    assert gets(emulator, imds(INSTANCE_ID)) == 3


async def test_without_a_stale_value_the_failure_is_raised_again_at_once(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache(holdoff=3, max_attempts=1)
    emulator.faults.fail_next(1, status=500, path=f"/latest/{imds(INSTANCE_ID)}")
    for _ in range(3):
        with pytest.raises(Unavailable, match="HTTP 500"):
            await cache.get(INSTANCE_ID)
    assert gets(emulator, imds(INSTANCE_ID)) == 1
    mock_clock.jump(3)
    assert (await cache.get(INSTANCE_ID)).source == "live"


async def test_a_stalled_imds_costs_one_reader_the_deadline_not_every_reader(
    emulator: Emulator, make_cache: MakeCache
) -> None:
    cache = make_cache("**=0.2", holdoff=2, timeout=0.5)
    good = await cache.get(INSTANCE_ID)
    await trio.sleep(0.25)
    emulator.faults.stall_next(100, seconds=30, path=f"/latest/{imds(INSTANCE_ID)}")
    started = trio.current_time()
    assert (await cache.get(INSTANCE_ID)).source == "stale"
    assert 0.4 < trio.current_time() - started < 1.5  # this reader waited out the deadline
    for _ in range(20):
        started = trio.current_time()
        assert (await cache.get(INSTANCE_ID)).body == good.body
        assert trio.current_time() - started < 0.1  # the others do not
    assert gets(emulator, imds(INSTANCE_ID)) == 2


async def test_invalidate_ends_the_holdoff(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache(holdoff=60, max_attempts=1)
    emulator.faults.fail_next(1, status=500, path=f"/latest/{imds(INSTANCE_ID)}")
    with pytest.raises(Unavailable):
        await cache.get(INSTANCE_ID)
    cache.invalidate()
    assert (await cache.get(INSTANCE_ID)).source == "live"


def test_a_negative_holdoff_is_a_config_error() -> None:
    client = ImdsClient(ClientConfig(endpoint="http://127.0.0.1:9"), environ={})
    with pytest.raises(ConfigError, match="holdoff"):
        MetadataCache(client, TtlPolicy(), holdoff=-1)


# -- changed_at, peek, invalidate, statistics ----------------------------------------------


async def test_changed_at_moves_only_when_the_bytes_do(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache("local-ipv4=1")
    first = await cache.get(LOCAL_IPV4)
    assert abs(first.changed_at - time.time()) < 5
    mock_clock.jump(1)
    same = await cache.get(LOCAL_IPV4)
    assert same.source == "live"
    assert same.fetched_at > first.fetched_at
    assert same.changed_at == first.changed_at
    emulator.set(imds(LOCAL_IPV4), "10.9.9.9")
    mock_clock.jump(1)
    changed = await cache.get(LOCAL_IPV4)
    assert changed.body == b"10.9.9.9"
    assert changed.changed_at > first.changed_at


async def test_peek_returns_only_fresh_values_and_never_does_io(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache("instance-id=10")
    assert cache.peek(INSTANCE_ID) is None
    value = await cache.get(INSTANCE_ID)
    peeked = cache.peek(INSTANCE_ID)
    assert peeked is not None
    assert (peeked.body, peeked.source) == (value.body, "cache")
    mock_clock.jump(10)
    assert cache.peek(INSTANCE_ID) is None
    assert emulator.counters.count(method="GET") == 1


async def test_invalidate_makes_the_next_read_ask_imds_again(
    emulator: Emulator, make_cache: MakeCache, mock_clock: trio.testing.MockClock
) -> None:
    cache = make_cache("negative=60")
    first = await cache.get(INSTANCE_ID)
    await cache.get(LOCAL_IPV4)
    with pytest.raises(NotFound):
        await cache.get(SPOT_ACTION)
    cache.invalidate(INSTANCE_ID)
    assert cache.peek(INSTANCE_ID) is None
    assert cache.peek(LOCAL_IPV4) is not None
    again = await cache.get(INSTANCE_ID)
    assert again.source == "live"
    assert again.changed_at == first.changed_at  # same bytes, same mtime
    cache.invalidate()
    emulator.set(imds(SPOT_ACTION), "{}")
    for path in (INSTANCE_ID, LOCAL_IPV4, SPOT_ACTION):
        assert (await cache.get(path)).source == "live"
    assert [gets(emulator, imds(p)) for p in (INSTANCE_ID, LOCAL_IPV4, SPOT_ACTION)] == [3, 2, 2]


async def test_statistics_merge_cache_and_client_counters(
    emulator: Emulator, make_cache: MakeCache
) -> None:
    cache = make_cache()
    await cache.get(INSTANCE_ID)
    await cache.get(INSTANCE_ID)
    for _ in range(2):
        with pytest.raises(NotFound):
            await cache.get(SPOT_ACTION)
    stats = cache.statistics()
    assert {k: stats[k] for k in ("hits", "misses", "negative_hits", "fetches")} == {
        "hits": 1,
        "misses": 2,
        "negative_hits": 1,
        "fetches": 2,
    }
    assert stats["stale_serves"] == 0
    assert stats["entries"] == 1
    assert stats["token_puts"] == 1
    assert stats["requests"] == 3
    assert stats["errors.not_found"] == 1


def test_negative_stale_bound_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        MetadataCache(ImdsClient(environ={}), TtlPolicy(), stale_bound=-1)


async def test_the_values_kept_are_bounded_in_bytes_least_recently_used_first(
    emulator: Emulator, make_client: MakeClient
) -> None:
    for n in range(10):
        emulator.set(imds(f"tags/instance/big-{n}"), b"x" * 1000)
    client = make_client(emulator)
    cache = MetadataCache(client, TtlPolicy(builtin=client.provider.ttl_rules), max_bytes=4500)
    for n in range(10):
        await cache.get(f"tags/instance/big-{n}")
        await cache.get("tags/instance/big-0")  # used lately, always: kept
    stats = cache.statistics()
    assert stats["entries"] == 4
    assert stats["evictions"] == 6
    assert gets(emulator, imds("tags/instance/big-0")) == 1
    assert cache.peek("tags/instance/big-0") is not None
    assert cache.peek("tags/instance/big-1") is None
