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

Where the provider reads many paths in one request (a `Bulk`: GCE's subtrees, Azure's whole
document), every value the answer holds is kept, and reads that need the same request while
it is under way share it, whichever of its paths they asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable
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
from ._paths import MAX_NODES, is_listing
from ._provider import Bulk, ChangeFeed, Provider
from ._ttl import TtlPolicy

__all__ = ["CachedValue", "MetadataCache"]

log = logging.getLogger(__name__)

# Failures during which the last good value is still the best answer we have. TokenError is
# among them: an unreachable IMDS shows up first as an unanswered token PUT.
_OUTAGES = (Unavailable, Throttled, TokenError)
_SUMMARY_EVERY = 60.0  # seconds between summaries of failing background reads
# Bytes of values kept (fresh, and last good ones for outages). Real trees hold a few hundred
# KiB; a value is at most 1 MiB.
MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class CachedValue:
    """A value as the filesystem sees it."""

    path: str  # mount path; a listing's ends in "/"
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
        max_bytes: int = MAX_BYTES,
    ) -> None:
        for name, seconds in (("stale_bound", stale_bound), ("holdoff", holdoff)):
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ConfigError(f"{name} must be a number of seconds >= 0")
        self._client = client
        self._policy = policy
        self._stale_bound = stale_bound
        self._holdoff = holdoff
        self._values: dict[str, CachedValue] = {}  # last good value, fresh or not; LRU order
        self._bytes = 0  # of the bodies in _values
        self._max_bytes = max_bytes
        # Until when the service counts as not answering: a reader waited out its deadline.
        self._unanswered_until = -math.inf
        self._listeners: list[Callable[[str], None]] = []
        self._feed: ChangeFeed | None = None  # the service's, once following it
        self._next_summary = -math.inf  # when background failures may be summarised again
        self._negative: dict[str, float] = {}  # path -> when its 404 expires
        self._failures: dict[str, _Failure] = {}  # paths failing since their last success
        self._flight: SingleFlight[str, CachedValue] = SingleFlight()
        self._bulk_flight: SingleFlight[tuple[str, str], dict[str, CachedValue]] = SingleFlight()
        self._stats = CacheStatistics()
        self._loggable = client.loggable

    async def get(self, path: str, *, background: bool = False) -> CachedValue:
        """The value of ``path``: cached while fresh, else fetched once for all callers.

        Raises NotFound (also from a cached 404) or the client's error when no stale value
        may stand in for it. A *background* read (read-ahead, prefetch) that fails is not
        warned about path by path: such failures are summarised, and a path is warned about
        when a reader asks for it.
        """
        try:
            value = await self._get(path, background)
        except ImdsError:
            if not background:
                self._warn_reader(path)
            raise
        if value.source == "stale" and not background:
            self._warn_reader(path)
        return value

    async def _get(self, path: str, background: bool) -> CachedValue:
        now = trio.current_time()
        if now < self._negative.get(path, -1.0):
            self._stats.negative_hits += 1
            raise NotFound(self._loggable(path))
        value = self._values.get(path)
        if value is not None and now < value.expires_at:
            self._stats.hits += 1
            self._values[path] = self._values.pop(path)  # most recently used now
            return dataclasses.replace(value, source="cache")
        failure = self._failures.get(path)
        if failure is not None and now < failure.retry_at:
            self._stats.held_off += 1
            return self._stale_or_raise(path, failure.error())
        self._stats.misses += 1
        if value is not None and now < self._unanswered_until:
            # The service is not answering: the last good value now, a refresh behind it,
            # rather than every component of every path waiting out its deadline again.
            self._refresh_in_background(path)
            return self._stale_or_raise(path, Unavailable(f"{self._loggable(path)}: no answer"))
        with trio.move_on_at(fallback_deadline()):
            return await self._flight.run(path, lambda: self._fetch(path, background))
        # The reader's time ran out with the service still being asked: it is not answering
        # in time.
        self._unanswered_until = trio.current_time() + self._holdoff
        return self._stale_or_raise(path, DeadlineExceeded(f"{self._loggable(path)}: no answer"))

    def _refresh_in_background(self, path: str) -> None:
        """Start fetching *path*, unless that is under way already, without waiting for it."""
        if self._flight.in_flight(path):
            return

        async def refresh() -> None:
            with contextlib.suppress(ImdsError):  # its outcome is recorded all the same
                await self._flight.run(path, lambda: self._fetch(path, background=True))

        trio.lowlevel.spawn_system_task(refresh, name=f"refresh {self._loggable(path)}")

    @property
    def provider(self) -> Provider:
        """The service the values come from (its URLs, listings, secrets)."""
        return self._client.provider

    def peek(self, path: str) -> CachedValue | None:
        """The fresh cached value of ``path``, without I/O; None if there is none."""
        value = self._values.get(path)
        if value is None or trio.current_time() >= value.expires_at:
            return None
        return dataclasses.replace(value, source="cache")

    async def refresh(self, path: str) -> None:
        """Ask the service for *path* now, fresh or not (a watched path's turn): one request
        however many ask at once; the outcome is kept (and told) as any fetch's is."""
        with contextlib.suppress(ImdsError):
            await self._flight.run(path, lambda: self._fetch(path, background=True))

    def ttl(self, path: str) -> float:
        """How long a value of *path* is served before it is asked for again."""
        return self._policy.ttl(path)

    def absent(self, path: str) -> bool:
        """Whether the service's last answer for *path* was 404."""
        return path in self._negative

    def pushed(self, path: str) -> bool:
        """Whether the service's change feed, answering now, reports changes of *path*."""
        feed = self._feed
        return feed is not None and feed.following and feed.covers(path)

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

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call *listener* with a path whenever its value is known to have changed: fetched
        with new bytes, gone (404), or reported by the service's change feed."""
        self._listeners.append(listener)

    def _changed(self, path: str) -> None:
        for listener in self._listeners:
            try:
                listener(path)
            except Exception:  # a listener's bug must not lose the value or end the mount
                log.exception("a change listener failed for %s", self._loggable(path))

    async def follow_changes(self) -> None:
        """Apply the service's change feed, if it has one, until cancelled: each reported
        path is made stale (its next read asks again) and its listeners are told."""
        feed = self._client.change_feed()
        if feed is None:
            return
        self._feed = feed
        async for paths in feed.changes():
            self._stats.pushed_changes += len(paths)
            for path in paths:
                self.invalidate(path)
                self._changed(path)

    def statistics(self) -> dict[str, int]:
        """hits, misses, negative_hits, held_off, stale_serves, fetches, entries, plus the
        client's."""
        own = dataclasses.asdict(self._stats)
        return {**self._client.statistics(), **own, "entries": len(self._values)}

    async def _fetch(self, path: str, background: bool = False) -> CachedValue:
        self._stats.fetches += 1
        known = self.provider.known(path)
        if known is not None:
            return self._fetched(path, known, trio.current_time())
        try:
            bulk = self._bulk(path)
            if bulk is not None:
                value = await self._fetch_bulk(path, bulk)
                if value is not None:
                    return value
            response = await self._client.get(path)
        except NotFound:
            existed = path in self._values
            self._forget(path)  # gone: never serve it stale again
            self._remember_absent(path)
            self._recovered(path)
            if existed:
                self._changed(path)
            raise
        except ImdsError as exc:
            self._failed(path, exc, background)
            if isinstance(exc, Unavailable):  # no answer (or a broken one): so for others too
                self._unanswered_until = trio.current_time() + self._holdoff
            return self._stale_or_raise(path, exc)
        return self._fetched(path, response.body, response.fetched_at)

    def _bulk(self, path: str) -> Bulk | None:
        """The provider's one-request read covering *path*: for every read where the provider
        says so (`Bulk.always`), else for a directory read for the first time (a cold walk),
        whose later refreshes are path by path."""
        bulk = self._client.bulk(path)
        if bulk is None or bulk.always:
            return bulk
        return bulk if is_listing(path) and path not in self._values else None

    async def _fetch_bulk(self, path: str, bulk: Bulk) -> CachedValue | None:
        """*path*'s value from *bulk*'s answer, whose every value is kept. None when the
        answer lacks it and *path* can be asked for on its own; NotFound when it cannot."""
        value = self._values.get(path)
        if value is not None and trio.current_time() < value.expires_at:
            return value  # an answer holding it came in since this read missed
        source = path if bulk.source is None else bulk.source
        found = await self._bulk_flight.run(
            (source, bulk.query), lambda: self._read_bulk(source, bulk)
        )
        value = found.get(path)
        if value is None and bulk.always:
            raise NotFound(self._loggable(path))
        return value

    async def _read_bulk(self, source: str, bulk: Bulk) -> dict[str, CachedValue]:
        """One request for *bulk*, every value it holds kept; none when its answer cannot be
        read and the paths can be asked for one by one."""
        response = await self._client.get(source, query=bulk.query)
        try:
            found = bulk.expand(response.body)
        except (ValueError, RecursionError) as exc:  # nested past what json can walk
            reason = f"{self.provider.where(source)}: unreadable answer ({exc})"
            if bulk.always:
                raise Unavailable(reason) from None
            log.debug("%s; reading its paths one by one", reason)
            return {}
        self._stats.bulk_values += len(found)
        return {
            path: self._fetched(path, body, response.fetched_at) for path, body in found.items()
        }

    def _fetched(self, path: str, body: bytes, fetched_at: float) -> CachedValue:
        """Keep what the service answered for *path*; tell listeners if it changed."""
        self._recovered(path)
        self._unanswered_until = -math.inf  # it answers
        previous = self._values.get(path)
        unchanged = previous is not None and previous.body == body
        value = CachedValue(
            path=path,
            body=body,
            fetched_at=fetched_at,
            expires_at=fetched_at + self._policy.ttl(path),
            changed_at=previous.changed_at if previous and unchanged else time.time(),
            source="live",
        )
        self._store(value)
        appeared = self._negative.pop(path, None) is not None  # a 404 before: new now
        if appeared or (previous is not None and not unchanged):
            self._changed(path)
        return value

    def _remember_absent(self, path: str) -> None:
        """Keep *path*'s 404 for the negative TTL. 404s that have expired are let go (oldest
        first: they all live as long), and past `MAX_NODES` the oldest too, so names a local
        user invents (a watch file of each) cannot grow the daemon."""
        now = trio.current_time()
        self._negative.pop(path, None)
        self._negative[path] = now + self._policy.negative_ttl
        while len(self._negative) > 1:
            oldest, until = next(iter(self._negative.items()))
            if until > now and len(self._negative) <= MAX_NODES:
                break
            del self._negative[oldest]

    def _store(self, value: CachedValue) -> None:
        """Keep *value*, letting go of the least recently used others past `max_bytes`: a
        service serving big values under thousands of names must not grow the daemon."""
        self._forget(value.path)
        self._values[value.path] = value
        self._bytes += len(value.body)
        while self._bytes > self._max_bytes and len(self._values) > 1:
            oldest = next(iter(self._values))
            self._forget(oldest)
            self._stats.evictions += 1

    def _forget(self, path: str) -> None:
        value = self._values.pop(path, None)
        if value is not None:
            self._bytes -= len(value.body)

    def _failed(self, path: str, error: ImdsError, background: bool) -> None:
        """Hold the path off for a while; warn only on the first failure of a spell, and
        for a background read not at all (see `_summarise`)."""
        now = trio.current_time()
        previous = self._failures.get(path)
        warned = previous is not None and previous.warned
        self._failures[path] = _Failure(
            type(error), str(error), retry_at=now + self._holdoff, warned=warned or not background
        )
        if previous is not None:
            return
        if len(self._failures) > MAX_NODES:  # names invented by a local user, in an outage
            del self._failures[next(iter(self._failures))]
        if not background:
            self._warn(path, error)
        elif self._summarise(path, error):
            self._failures[path].warned = True  # named in the summary: not again for a reader

    def _warn_reader(self, path: str) -> None:
        """A reader met a failure a background read found first: warn about it now."""
        failure = self._failures.get(path)
        if failure is not None and not failure.warned:
            failure.warned = True
            self._warn(path, failure.error())

    def _summarise(self, path: str, error: ImdsError) -> bool:
        """Background reads that fail: one line now and then, not one per path. Whether this
        one was the line's example."""
        self._stats.background_failures += 1
        now = trio.current_time()
        if now < self._next_summary:
            return False
        self._next_summary = now + _SUMMARY_EVERY
        log.warning(
            "reading ahead: %s: %s (%d background reads failed so far; they are not logged "
            "one by one, only when a reader asks)",
            self.provider.where(path),
            str(error).removeprefix(f"{self._loggable(path)}: "),
            self._stats.background_failures,
        )
        return True

    def _warn(self, path: str, error: ImdsError) -> None:
        now = trio.current_time()
        shown = self._loggable(path)
        reason = str(error).removeprefix(f"{shown}: ")  # most messages start with the path
        value = self._values.get(path)
        if isinstance(error, _OUTAGES) and value is not None:
            age = now - value.fetched_at
            if age < self._stale_bound:
                log.warning(
                    "%s: %s; serving the value fetched %.0f s ago until it answers",
                    self.provider.where(path),
                    reason,
                    age,
                )
                return
        log.warning("%s: %s", self.provider.where(path), reason)

    def _recovered(self, path: str) -> None:
        if self._failures.pop(path, None) is not None:
            log.info("%s: answers again", self.provider.where(path))

    def _stale_or_raise(self, path: str, error: ImdsError) -> CachedValue:
        value = self._values.get(path)
        if (
            not isinstance(error, _OUTAGES)
            or value is None
            or trio.current_time() - value.fetched_at >= self._stale_bound
        ):
            raise error
        self._stats.stale_serves += 1
        return dataclasses.replace(value, source="stale")


@dataclass
class CacheStatistics:
    hits: int = 0
    misses: int = 0
    negative_hits: int = 0
    held_off: int = 0
    stale_serves: int = 0
    fetches: int = 0
    evictions: int = 0
    pushed_changes: int = 0  # paths the service's change feed reported
    background_failures: int = 0  # read-ahead and prefetch reads that failed
    bulk_values: int = 0  # listings and values kept from one-request subtree reads


@dataclass
class _Failure:
    """Why a path's last fetch failed, and when it may be asked again.

    The error is kept as its type and message, and raised anew each time: re-raising one
    exception object would chain a traceback per raise."""

    kind: type[ImdsError]
    message: str
    retry_at: float  # trio clock
    warned: bool = True  # False: found by a background read, not yet warned about

    def error(self) -> ImdsError:
        return self.kind(self.message)
