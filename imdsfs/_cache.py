"""The metadata cache between the filesystem and the client.

A FUSE filesystem is read far more often than IMDS changes, and IMDS drops packets past 1024
per second, so every value is cached for the TTL its path's policy gives. Four rules shape it:

- Concurrent misses for one path share one request (single flight): ``ls -l`` on a cold
  directory, or 64 readers of one file, cost one GET each. The request runs in a task of its
  own, bounded by the client's timeout: a reader whose deadline comes first stops waiting
  (and gets the last good value if there is one) without cancelling it, so its outcome is
  cached or held off for the readers after it.
- A 404 is an answer: it is cached briefly (``policy.negative_ttl``) and raised to every waiter.
  A failure is not an answer and never becomes a negative entry.
- While IMDS fails (unavailable, throttled, past its deadline, no token), the last good value
  is served, marked ``"stale"``, as long as it is younger than ``stale_bound``. A 403 is a
  decision, not an outage, and is raised as it is.
- After a failed fetch, the path is not asked again for ``holdoff`` seconds: reads get the
  stale value (or the failure) at once instead of each waiting out the deadline, and a
  failing IMDS is not hammered. One warning per path per failure spell says what failed.
- ``changed_at`` (the file's mtime) moves only when the bytes do, so the kernel's page cache
  can be kept across opens of an unchanged file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import trio

from ._client import ImdsClient
from ._errors import (
    ConfigError,
    DeadlineExceeded,
    ImdsError,
    NotFound,
    Throttled,
    TokenError,
    Unavailable,
)
from ._flight import SingleFlight, fallback_deadline
from ._paths import loggable
from ._ttl import TtlPolicy

__all__ = ["CachedValue", "MetadataCache"]

log = logging.getLogger(__name__)

# Failures during which the last good value is still the best answer we have. TokenError is
# among them: an unreachable IMDS shows up first as an unanswered token PUT.
_OUTAGES = (Unavailable, Throttled, TokenError)


@dataclass(frozen=True)
class CachedValue:
    """A value as the filesystem sees it."""

    path: str  # IMDS path relative to /latest/
    body: bytes
    fetched_at: float  # trio clock, when IMDS sent these bytes
    expires_at: float  # trio clock
    changed_at: float  # wall clock (time.time()) when these bytes were first seen: the mtime
    source: Literal["live", "cache", "stale"]


class MetadataCache:
    """Per-path TTL cache over an ``ImdsClient``; see the module docstring for its rules."""

    def __init__(
        self,
        client: ImdsClient,
        policy: TtlPolicy,
        *,
        stale_bound: float = 300.0,
        holdoff: float = 3.0,
    ) -> None:
        for name, seconds in (("stale_bound", stale_bound), ("holdoff", holdoff)):
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ConfigError(f"{name} must be a number of seconds >= 0")
        self._client = client
        self._policy = policy
        self._stale_bound = stale_bound
        self._holdoff = holdoff
        self._values: dict[str, CachedValue] = {}  # last good value, fresh or not
        self._negative: dict[str, float] = {}  # path -> when its 404 expires
        self._failures: dict[str, _Failure] = {}  # paths failing since their last success
        self._flight: SingleFlight[str, CachedValue] = SingleFlight()
        self._stats: Counter[str] = Counter()

    async def get(self, path: str) -> CachedValue:
        """The value of ``path``: cached while fresh, else fetched once for all callers.

        Raises NotFound (also from a cached 404) or the client's error when no stale value
        may stand in for it.
        """
        now = trio.current_time()
        if now < self._negative.get(path, -1.0):
            self._stats["negative_hits"] += 1
            raise NotFound(loggable(path))
        value = self._values.get(path)
        if value is not None and now < value.expires_at:
            self._stats["hits"] += 1
            return dataclasses.replace(value, source="cache")
        failure = self._failures.get(path)
        if failure is not None and now < failure.retry_at:
            self._stats["held_off"] += 1
            return self._stale_or_raise(path, failure.error())
        self._stats["misses"] += 1
        with trio.move_on_at(fallback_deadline()):
            return await self._flight.run(path, lambda: self._fetch(path))
        # The reader's time ran out with IMDS still being asked: IMDS is not answering in time.
        return self._stale_or_raise(path, DeadlineExceeded(f"{loggable(path)}: no answer in time"))

    @property
    def endpoint(self) -> str:
        """The IMDS base URL the values come from (``user.imds.url``, ``imdsfs stats``)."""
        return self._client.endpoint

    def peek(self, path: str) -> CachedValue | None:
        """The fresh cached value of ``path``, without I/O; None if there is none."""
        value = self._values.get(path)
        if value is None or trio.current_time() >= value.expires_at:
            return None
        return dataclasses.replace(value, source="cache")

    def invalidate(self, path: str | None = None) -> None:
        """Make ``path`` (or every path) stale, so the next ``get`` asks IMDS again.

        The last good value is kept: it still stands in during an outage, and an unchanged
        value keeps its ``changed_at``.
        """
        paths = list(self._values) if path is None else [path]
        for key in paths:
            value = self._values.get(key)
            if value is not None:
                self._values[key] = dataclasses.replace(value, expires_at=-float("inf"))
        if path is None:
            self._negative.clear()
            for failure in self._failures.values():
                failure.retry_at = -math.inf
        else:
            self._negative.pop(path, None)
            if path in self._failures:
                self._failures[path].retry_at = -math.inf

    def statistics(self) -> dict[str, int]:
        """hits, misses, negative_hits, held_off, stale_serves, fetches, entries, plus the
        client's."""
        keys = ("hits", "misses", "negative_hits", "held_off", "stale_serves", "fetches")
        own = dict.fromkeys(keys, 0)
        own.update(self._stats)
        own["entries"] = len(self._values)
        return {**self._client.statistics(), **own}

    async def _fetch(self, path: str) -> CachedValue:
        self._stats["fetches"] += 1
        try:
            response = await self._client.get(path)
        except NotFound:
            self._values.pop(path, None)  # gone: never serve it stale again
            self._negative[path] = trio.current_time() + self._policy.negative_ttl
            self._recovered(path)
            raise
        except ImdsError as exc:
            self._failed(path, exc)
            return self._stale_or_raise(path, exc)
        self._recovered(path)
        previous = self._values.get(path)
        unchanged = previous is not None and previous.body == response.body
        value = CachedValue(
            path=path,
            body=response.body,
            fetched_at=response.fetched_at,
            expires_at=response.fetched_at + self._policy.ttl(path),
            changed_at=previous.changed_at if previous and unchanged else time.time(),
            source="live",
        )
        self._values[path] = value
        self._negative.pop(path, None)
        return value

    def _failed(self, path: str, error: ImdsError) -> None:
        """Hold the path off for a while; warn only on the first failure of a spell."""
        now = trio.current_time()
        first = path not in self._failures
        self._failures[path] = _Failure(type(error), str(error), retry_at=now + self._holdoff)
        if not first:
            return
        shown = loggable(path)
        reason = str(error).removeprefix(f"{shown}: ")  # most messages start with the path
        value = self._values.get(path)
        if isinstance(error, _OUTAGES) and value is not None:
            age = now - value.fetched_at
            if age < self._stale_bound:
                log.warning(
                    "/latest/%s: %s; serving the value fetched %.0f s ago until IMDS answers",
                    shown,
                    reason,
                    age,
                )
                return
        log.warning("/latest/%s: %s", shown, reason)

    def _recovered(self, path: str) -> None:
        if self._failures.pop(path, None) is not None:
            log.info("/latest/%s: IMDS answers again", loggable(path))

    def _stale_or_raise(self, path: str, error: ImdsError) -> CachedValue:
        value = self._values.get(path)
        if (
            not isinstance(error, _OUTAGES)
            or value is None
            or trio.current_time() - value.fetched_at >= self._stale_bound
        ):
            raise error
        self._stats["stale_serves"] += 1
        return dataclasses.replace(value, source="stale")


@dataclass
class _Failure:
    """Why a path's last fetch failed, and when it may be asked again.

    The error is kept as its type and message, and raised anew each time: re-raising one
    exception object would chain a traceback per raise."""

    kind: type[ImdsError]
    message: str
    retry_at: float  # trio clock

    def error(self) -> ImdsError:
        return self.kind(self.message)
