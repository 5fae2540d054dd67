"""A service's request-rate limit, kept on our side (Azure IMDS: 5 requests per second per
VM, and 429 past that).

The provider declares the limit (`RateLimit`); the transport, through which every request
goes, keeps it (`RateLimiter`), so no code path can send a request around it.

The service counts a request when it arrives, and we cannot see when that is: only that it
was between sending the request and reading the answer. So a request holds one of the
``requests`` places from before it is sent until ``per`` seconds after its answer (or its
failure). Whatever the latency, no ``per``-second window at the service then sees more than
``requests`` arrivals. A 429 says the service counted more than we did (another process on
the VM asks too): no request is sent until its ``Retry-After`` (else one window) has passed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

import trio

from ._errors import ConfigError, Throttled

__all__ = ["MAX_PAUSE", "RateLimit", "RateLimiter"]

# The longest pause a 429 may impose. The service's window is a second; a Retry-After of
# hours can only be a broken or hostile answer, and obeying it would stop every request of
# the mount (readers would get stale values, then errors, until it passed).
MAX_PAUSE = 10.0


@dataclass(frozen=True)
class RateLimit:
    """At most *requests* requests in any *per* seconds."""

    requests: int
    per: float

    def __post_init__(self) -> None:
        if self.requests < 1 or not (math.isfinite(self.per) and self.per > 0):
            raise ConfigError("a rate limit needs at least 1 request in a positive time")


class RateLimiter:
    """Keeps a `RateLimit`; see the module docstring. Waiting is within the caller's deadline:
    a request that waits for a place past it is cancelled as it would be on the wire, and one
    that a pause would keep past it fails at once, as `Throttled`."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._places = trio.Semaphore(limit.requests)  # first come, first served
        self._paused_until = -math.inf  # trio clock
        self.waits = 0  # requests that found every place taken, or a pause on

    @contextlib.asynccontextmanager
    async def place(self, label: str) -> AsyncIterator[None]:
        """Hold a place while one request (named *label* in errors) is sent and answered."""
        if self._places.value == 0 or self._paused_until > trio.current_time():
            self.waits += 1
        await self._places.acquire()
        try:
            await self._wait_out_pause(label)
        except BaseException:  # not sent: the place is free at once
            self._places.release()
            raise
        try:
            yield
        finally:
            trio.lowlevel.spawn_system_task(self._release_later, name="rate limit place")

    def pause(self, seconds: float) -> None:
        """The service refused a request as over its limit: send nothing for *seconds*
        (at most `MAX_PAUSE`)."""
        until = trio.current_time() + min(seconds, MAX_PAUSE)
        self._paused_until = max(self._paused_until, until)

    async def _wait_out_pause(self, label: str) -> None:
        while (until := self._paused_until) > trio.current_time():
            if until > trio.current_effective_deadline():
                raise Throttled(
                    f"{label}: the service asked for a pause that outlasts the deadline"
                )
            await trio.sleep_until(until)

    async def _release_later(self) -> None:
        await trio.sleep(self.limit.per)
        self._places.release()
