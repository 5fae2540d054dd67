"""Trio tools shared by every layer: single flight, and when a fallback must stop waiting.

`SingleFlight` makes concurrent calls for one key share one execution. The execution runs in
a task of its own, not in the first caller's: a caller whose deadline passes stops waiting
without cancelling it, so its outcome is still recorded (a failure starts the hold-off, a
value fills the cache) and callers arriving later join it instead of starting another.

Deadlines are absolute and set once per operation, where it enters (a FUSE request, a
background fetch, a dump). Layers below read trio's effective deadline; a layer that still has
something to answer when time runs out (a stale value, a listing with some sizes unknown)
stops waiting at `fallback_deadline`, a moment before the operation's deadline, so its answer
is out in time.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

__all__ = ["ANSWER_RESERVE", "SingleFlight", "fallback_deadline"]

# Time kept back, before an operation's deadline, to build and send an answer from what is at
# hand. A reply is a few hundred microseconds of CPU; this leaves room for a loaded machine.
ANSWER_RESERVE = 0.1

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def fallback_deadline() -> float:
    """When a layer that can still answer something stops waiting for better."""
    return trio.current_effective_deadline() - ANSWER_RESERVE


@dataclass(eq=False)
class _Call(Generic[T]):
    done: trio.Event = field(default_factory=trio.Event)
    result: tuple[T] | None = None
    error: Exception | None = None


class SingleFlight(Generic[K, T]):
    """Concurrent calls for one key share one execution and its result or exception.

    Each caller waits under its own deadline; the execution itself is bounded only by what
    the function does (it sets its own deadline). Every caller that gets the exception gets
    a copy of its own, so no traceback is chained onto another caller's. If the run ends while
    an execution is in flight (the mount stops), its waiters are cancelled too.
    """

    def __init__(self) -> None:
        self._calls: dict[K, _Call[T]] = {}

    def in_flight(self, key: K) -> bool:
        return key in self._calls

    async def run(self, key: K, fn: Callable[[], Awaitable[T]]) -> T:
        call = self._calls.get(key)
        if call is None:
            call = _Call()
            self._calls[key] = call
            trio.lowlevel.spawn_system_task(self._execute, key, call, fn, name=f"flight {key!r}")
        await call.done.wait()
        if call.result is not None:
            return call.result[0]
        if call.error is None:  # the execution was cancelled: the run is ending
            raise RuntimeError(f"{key!r}: the run ended while it was in flight")
        raise _own_copy(call.error) from call.error

    async def _execute(self, key: K, call: _Call[T], fn: Callable[[], Awaitable[T]]) -> None:
        try:
            call.result = (await fn(),)
        except Exception as exc:  # handed to every waiter; a system task must not raise
            call.error = exc
        finally:
            del self._calls[key]
            call.done.set()


def _own_copy(error: Exception) -> Exception:
    """A new exception object like *error*: raising one object in many tasks would chain each
    raise's traceback onto the others'."""
    try:
        return copy.copy(error)
    except Exception:  # an exception type that cannot be rebuilt from its arguments
        return error
