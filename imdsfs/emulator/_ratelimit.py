"""A sliding-window request limit on the emulator clock (Azure's 5 requests per second).

Only admitted requests fill the window: a client that is refused does not push its own
next chance further away. Thread-safe; time comes from the injectable clock, so a
``ManualClock`` makes the limit exact in tests.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable

__all__ = ["SlidingWindow"]


class SlidingWindow:
    """At most ``limit`` admitted requests in any ``window`` seconds."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a limit needs at least one request in a positive window")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._admitted: deque[float] = deque()
        self._refused = 0
        self._lock = threading.Lock()

    def admit(self) -> int | None:
        """None if the request may go on; else whole seconds (>= 1) until one would be."""
        now = self._clock()
        with self._lock:
            while self._admitted and self._admitted[0] <= now - self.window:
                self._admitted.popleft()
            if len(self._admitted) < self.limit:
                self._admitted.append(now)
                return None
            self._refused += 1
            return max(1, math.ceil(self._admitted[0] + self.window - now))

    @property
    def refused(self) -> int:
        with self._lock:
            return self._refused

    def reset(self) -> None:
        """Forget the window (not the refusal count): the next requests start afresh."""
        with self._lock:
            self._admitted.clear()
