"""Waiting for values to change: which paths someone waits on, kept fresh with no reader.

A path is *watched* while a process waits on it: it polls (``poll``, ``select``, ``epoll``)
a file of the mount it holds open, or holds open the path's *watch file*,
``.imdsfs/watch/<the path, %-quoted>``, which is how ``imdsfs wait`` waits for a path that
does not exist yet (EC2's ``spot/instance-action`` is a 404 until a notice), since no file of
its own can stand for it then.

Each watched path is asked for once per TTL by one task, however many processes wait on it,
unless the service's change feed reports its changes anyway (GCE); the cache's listeners then
carry a change to the waiters. Nothing waits inside the daemon: a waiting process sleeps in
the kernel's ``poll()``, bounded by its own timeout, so no request of it is ever held.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import trio

from ._cache import MetadataCache
from ._errors import ConfigError, ImdsError, NotFound
from ._paths import check_path, is_listing

__all__ = ["WatchFile", "WatchFiles", "Watches"]

log = logging.getLogger(__name__)

# However short a path's TTL, a watch asks no more often than this.
MIN_INTERVAL = 0.5
# At most this many paths are refreshed for their waiters (each costs a request per TTL:
# 64 paths of 5 s are 13 requests a second, a hundredth of EC2's limit; a provider's own
# limit, Azure's 5 a second, is kept by the transport). Real watchers wait on a handful; a
# local user opening thousands of watch files must not turn the mount into a flood of
# requests that throttles every process on the instance.
MAX_WATCHED = 64
# And at most this many watch files a second may be opened for a path not watched already
# whose value must be asked for (opening and closing new names would otherwise cost a
# request each; a watched path is one of the MAX_WATCHED, refreshed anyway).
MAX_NEW_PER_SECOND = 10


class Watches:
    """The watched paths, each with how many wait on it, and the tasks that refresh them."""

    def __init__(self, cache: MetadataCache, refreshed: Callable[[str], None]) -> None:
        """*refreshed* is called with a path each time it has been asked for again (and
        the cache's listeners, as ever, when its value changed)."""
        self._cache = cache
        self._refreshed = refreshed
        self._waiting: collections.Counter[str] = collections.Counter()
        self._refreshing: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        cache.add_listener(self._changed)

    def add(self, path: str) -> bool:
        """One more process waits on *path*; False (and nothing kept) when `MAX_WATCHED`
        other paths are watched already."""
        if self.full(path):
            return False
        self._waiting[path] += 1
        self._start(path)
        return True

    def watched(self, path: str) -> bool:
        return path in self._waiting

    def full(self, path: str) -> bool:
        """Whether *path* cannot be watched now: it is not, and `MAX_WATCHED` others are."""
        return not self.watched(path) and len(self._waiting) >= MAX_WATCHED

    def discard(self, path: str) -> None:
        """One fewer; the last one gone ends the path's refreshing at once (a task asleep
        for a six-hour TTL would otherwise outlive its waiters that long)."""
        self._waiting[path] -= 1
        if self._waiting[path] <= 0:
            del self._waiting[path]
            scope = self._refreshing.pop(path, None)
            if scope is not None:
                scope.cancel()

    def ask_now(self, path: str) -> None:
        """Ask for *path* at once, out of turn (a poller came with a value the cache can no
        longer vouch for: a change feed's news arrived before it polled). As any read asks:
        not while the service is held off as failing."""
        if self._nursery is not None:
            self._nursery.start_soon(self._read, path)

    def refreshing(self) -> int:
        """How many refresh tasks are alive (one per watched path, none once it is not)."""
        return 0 if self._nursery is None else len(self._nursery.child_tasks)

    def paths(self) -> list[str]:
        """The watched paths, sorted."""
        return sorted(self._waiting)

    async def run(self) -> None:
        """Refresh watched paths until cancelled (in the mount's nursery)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for path in self._waiting:
                self._start(path)
            await trio.sleep_forever()

    def _start(self, path: str) -> None:
        if self._nursery is not None and path not in self._refreshing:
            scope = self._refreshing[path] = trio.CancelScope()
            self._nursery.start_soon(self._refresh, path, scope)

    async def _refresh(self, path: str, scope: trio.CancelScope) -> None:
        """Ask for *path* every TTL while anyone waits on it (the value was just read by
        whoever started waiting, so first wait a TTL); cancelled when the last one goes."""
        with scope:
            while True:
                await trio.sleep(max(self._cache.ttl(path), MIN_INTERVAL))
                if not self._cache.pushed(path):
                    await self._cache.refresh(path)
                    self._tell(path)

    async def _read(self, path: str) -> None:
        with contextlib.suppress(ImdsError):
            await self._cache.get(path, background=True)
        self._tell(path)

    def _tell(self, path: str) -> None:
        try:
            self._refreshed(path)
        except Exception:  # a waker's bug must not end the mount
            shown = self._cache.provider.secrets.loggable(path)  # a secret's name stays out
            log.exception("waking the waiters of %s failed", shown)

    def _changed(self, path: str) -> None:
        """A watched path that appeared or vanished changes its parents' listings too: they
        are asked for again at their next read, so the file shows at once."""
        if path not in self._waiting:
            return
        parts = path.split("/")
        for depth in range(len(parts)):
            self._cache.invalidate("".join(part + "/" for part in parts[:depth]))


@dataclass
class WatchFile:
    """The watch file of one path: an inode the kernel may hold, kept while it does."""

    inode: int
    path: str
    lookups: int = 0
    opened: int = 0


class WatchFiles:
    """The inodes of ``.imdsfs/`` and its ``watch/`` directory, and of the watch files in it,
    which exist for as long as the kernel holds them (so a local user naming many paths
    cannot grow the daemon past what the kernel itself keeps)."""

    def __init__(self, control_inode: int, watch_inode: int) -> None:
        self.control_inode = control_inode
        self.watch_inode = watch_inode
        self._by_inode: dict[int, WatchFile] = {}
        self._by_path: dict[str, WatchFile] = {}
        self._asked: collections.deque[float] = collections.deque()  # opens that asked

    def may_ask(self, now: float) -> bool:
        """Whether a watch file may be opened now for a path that must be asked for: no
        more than `MAX_NEW_PER_SECOND` in any second."""
        while self._asked and self._asked[0] <= now - 1.0:
            self._asked.popleft()
        if len(self._asked) >= MAX_NEW_PER_SECOND:
            return False
        self._asked.append(now)
        return True

    def lookup(self, name: str, new_inode: Callable[[], int]) -> WatchFile:
        """The watch file called *name*; NotFound if it names no path a file could have."""
        path = urllib.parse.unquote(name)
        try:
            check_path(path)
        except (ConfigError, UnicodeError):  # bytes no path has, too
            raise NotFound(f"no path {path[:300]!r} to watch") from None
        if not path or is_listing(path):
            raise NotFound(f"{path!r} is a directory: only files are watched")
        found = self._by_path.get(path)
        if found is None:
            found = WatchFile(new_inode(), path)
            self._by_inode[found.inode] = found
            self._by_path[path] = found
        found.lookups += 1
        return found

    def get(self, inode: int) -> WatchFile | None:
        return self._by_inode.get(inode)

    def forget(self, inode: int, count: int) -> None:
        found = self._by_inode.get(inode)
        if found is None:
            return
        found.lookups -= count
        self._drop_if_unused(found)

    def opened(self, found: WatchFile) -> None:
        found.opened += 1

    def released(self, found: WatchFile) -> None:
        found.opened -= 1
        self._drop_if_unused(found)

    def _drop_if_unused(self, found: WatchFile) -> None:
        if found.lookups <= 0 and found.opened <= 0:
            del self._by_inode[found.inode]
            del self._by_path[found.path]
