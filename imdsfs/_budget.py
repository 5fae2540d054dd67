"""How much of its deadline a system call has left when one of its FUSE requests arrives.

``--deadline`` bounds a *system call*, but the daemon sees FUSE *requests*, and one call can
be several of them, some of which waited in the kernel before the daemon saw them:

- A path walk is one request per component: ``stat a/b/c`` may send three LOOKUPs and a
  GETATTR, one after the other, from the same thread. Each continues the walk when it names
  the inode the thread's previous LOOKUP returned, a moment ago: it inherits that walk's
  deadline instead of starting a fresh one.
- The kernel runs the lookups and readdirs of one directory one at a time and queues the
  rest: libfuse 3.14 never passes FUSE_PARALLEL_DIROPS to the kernel (libfuse c9905341 fixed
  that, and 2c736f51 then made it opt-in, which pyfuse3 cannot ask for). So each directory
  keeps how long requests took in it, by thread: a request may have queued behind *other*
  threads' requests in the last *timeout* seconds, since its thread's own previous request
  there, and gets its deadline less that time. One thread reading a directory file by file
  is never charged for its own earlier requests.

A request that has no time left is still answered from what is at hand (the cache, a stale
value) or with an error, never cut off mid-reply: every deadline leaves `ANSWER_RESERVE`.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import trio

from ._flight import ANSWER_RESERVE

__all__ = ["Budgets"]

# A LOOKUP that follows its thread's previous one by more than this is a new system call.
_WALK_GAP = 0.05
# Requests remembered per directory; past this the oldest are forgotten (under a flood of
# requests each is quick, so little queueing time is lost with them).
_MAX_INTERVALS = 2000


@dataclass
class _Walk:
    """A thread's path walk in progress."""

    deadline: float
    returned: int  # the inode its last LOOKUP returned
    ended_at: float


@dataclass
class _Directory:
    """Requests of one directory over the last window: (start, end, thread)."""

    intervals: collections.deque[tuple[float, float, int]] = field(
        default_factory=collections.deque
    )
    last_end: dict[int, float] = field(default_factory=dict)  # thread → its last request's end


class Budgets:
    """Deadlines for FUSE requests that account for time already spent by their system call
    (see the module docstring). Pass the request's thread (``ctx.pid``)."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._walks: dict[int, _Walk] = {}
        self._directories: dict[int, _Directory] = {}

    @contextlib.contextmanager
    def lookup(self, thread: int, directory: int) -> Iterator[Callable[[int], None]]:
        """Run a LOOKUP in *directory*; call the function yielded with the inode it returns,
        so the walk's next request can continue it."""
        started = trio.current_time()
        deadline = min(self._walk_deadline(thread, directory, started), started + self._timeout)
        deadline = min(deadline, started + self._timeout - self._queued(directory, thread))
        returned: list[int] = []
        try:
            with _fail_at(started, deadline):
                yield returned.append
        finally:
            ended = trio.current_time()
            self._record(directory, thread, started, ended)
            if returned:
                self._walks[thread] = _Walk(deadline, returned[-1], ended)
            else:
                self._walks.pop(thread, None)

    @contextlib.contextmanager
    def request(self, thread: int, inode: int) -> Iterator[None]:
        """Run the request that ends a walk (GETATTR, OPEN, OPENDIR, GETXATTR, READLINK) on
        *inode*."""
        started = trio.current_time()
        deadline = self._walk_deadline(thread, inode, started)
        self._walks.pop(thread, None)
        with _fail_at(started, deadline):
            yield

    @contextlib.contextmanager
    def listing(self, thread: int, directory: int) -> Iterator[None]:
        """Run a READDIR of *directory* for *thread* (the one that opened it)."""
        started = trio.current_time()
        deadline = started + self._timeout - self._queued(directory, thread)
        try:
            with _fail_at(started, deadline):
                yield
        finally:
            self._record(directory, thread, started, trio.current_time())

    def _walk_deadline(self, thread: int, inode: int, now: float) -> float:
        walk = self._walks.get(thread)
        if walk is not None and walk.returned == inode and now - walk.ended_at < _WALK_GAP:
            return walk.deadline
        if len(self._walks) > _MAX_INTERVALS:  # threads come and go: forget finished walks
            self._walks = {t: w for t, w in self._walks.items() if now - w.ended_at < _WALK_GAP}
        return now + self._timeout

    def _queued(self, directory: int, thread: int) -> float:
        """The longest this thread's request may have queued behind other threads' in
        *directory*: their time there since its own last request ended, within the window."""
        state = self._directories.get(directory)
        if state is None:
            return 0.0
        now = trio.current_time()
        window_start = now - self._timeout
        while state.intervals and state.intervals[0][1] < window_start:
            state.intervals.popleft()
        since = max(window_start, state.last_end.get(thread, window_start))
        return sum(
            min(end, now) - max(start, since)
            for start, end, other in state.intervals
            if other != thread and end > since
        )

    def _record(self, directory: int, thread: int, started: float, ended: float) -> None:
        state = self._directories.setdefault(directory, _Directory())
        state.intervals.append((started, ended, thread))
        if len(state.intervals) > _MAX_INTERVALS:
            state.intervals.popleft()
        state.last_end[thread] = ended
        if len(state.last_end) > _MAX_INTERVALS:
            cutoff = ended - self._timeout
            state.last_end = {t: e for t, e in state.last_end.items() if e >= cutoff}


@contextlib.contextmanager
def _fail_at(started: float, deadline: float) -> Iterator[None]:
    """`trio.fail_at`, never earlier than the time it takes to answer from what is at hand."""
    with trio.fail_at(max(deadline, started + ANSWER_RESERVE)):
        yield
