"""The rate limit a provider declares (Azure: 5 requests per second), kept by the transport.

Time is pytest-trio's ``autojump_clock``, jumping whenever every task waits: sends are
instants, and an answer takes exactly what the fake service says.
"""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from imdsfs import ClientConfig, ConfigError, Throttled
from imdsfs._ratelimit import MAX_PAUSE, RateLimit, RateLimiter
from imdsfs._transport import Transport

FIVE_PER_SECOND = RateLimit(5, 1.0)


def answer(status: int, **headers: str) -> httpx.Response:
    """An answer still to be read, as off the network (the transport streams every body)."""
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(b"{}"))


def most_in_any_window(times: list[float], window: float = 1.0) -> int:
    """The most of *times* that fall in one half-open window of *window* seconds."""
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


async def send_all(limiter: RateLimiter, count: int, answer_after: float = 0.0) -> list[float]:
    """*count* concurrent requests through *limiter*; when each was sent."""
    sent: list[float] = []

    async def request() -> None:
        async with limiter.place("GET /x"):
            sent.append(trio.current_time())
            await trio.sleep(answer_after)

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(request)
    return sorted(sent)


@pytest.mark.parametrize("answer_after", [0.0, 0.3])
async def test_never_more_than_five_in_any_second(
    autojump_clock: trio.testing.MockClock, answer_after: float
) -> None:
    sent = await send_all(RateLimiter(FIVE_PER_SECOND), 23, answer_after)
    assert len(sent) == 23
    assert most_in_any_window(sent) == 5


async def test_a_place_is_held_until_a_window_after_the_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The service counts a request when it arrives, which may be as late as its answer."""
    start = trio.current_time()
    sent = await send_all(RateLimiter(FIVE_PER_SECOND), 6, answer_after=0.5)
    assert sent[5] - start == pytest.approx(1.5)


async def test_a_pause_holds_every_request_back(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(FIVE_PER_SECOND)
    start = trio.current_time()
    limiter.pause(2.0)
    sent = await send_all(limiter, 1)
    assert sent[0] - start == pytest.approx(2.0)


async def test_a_pause_is_never_longer_than_max_pause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A Retry-After of three years (a hostile or broken 429) must not stop the mount."""
    limiter = RateLimiter(FIVE_PER_SECOND)
    start = trio.current_time()
    limiter.pause(100_000_000.0)
    sent = await send_all(limiter, 1)
    assert sent[0] - start == pytest.approx(MAX_PAUSE)


async def test_a_pause_past_the_deadline_is_throttled_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(FIVE_PER_SECOND)
    limiter.pause(10.0)
    start = trio.current_time()
    with trio.move_on_after(5.0), pytest.raises(Throttled):
        async with limiter.place("GET /x"):
            pytest.fail("sent during the pause")
    assert trio.current_time() == start
    assert await send_all(limiter, 5) == [start + 10.0] * 5  # the place was given back


async def test_a_request_cancelled_while_waiting_takes_no_place(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(RateLimit(1, 1.0))
    start = trio.current_time()
    await send_all(limiter, 1)
    with trio.move_on_after(0.5):  # gives up before the place comes free
        await send_all(limiter, 1)
    assert await send_all(limiter, 1) == [start + 1.0]


async def test_the_transport_pauses_for_a_429s_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[float] = []

    def service(request: httpx.Request) -> httpx.Response:
        sent.append(trio.current_time())
        if len(sent) == 1:
            return answer(429, **{"Retry-After": "3"})
        return answer(200)

    transport = Transport(ClientConfig(), httpx.MockTransport(service), rate_limit=FIVE_PER_SECOND)
    start = trio.current_time()
    assert (await transport.request("GET", "http://imds.test/", {}, label="GET /")).status == 429
    assert (await transport.request("GET", "http://imds.test/", {}, label="GET /")).status == 200
    assert sent[1] - start == pytest.approx(3.0)
    assert transport.rate_limited == 1


async def test_without_a_declared_limit_nothing_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = Transport(ClientConfig(), httpx.MockTransport(lambda r: answer(429)))
    start = trio.current_time()
    for _ in range(20):
        await transport.request("GET", "http://imds.test/", {}, label="GET /")
    assert trio.current_time() == start
    assert transport.rate_limited is None


@pytest.mark.parametrize(("requests", "per"), [(0, 1.0), (5, 0.0), (5, float("inf"))])
def test_a_limit_needs_requests_in_a_positive_time(requests: int, per: float) -> None:
    with pytest.raises(ConfigError):
        RateLimit(requests, per)
