"""The emulator's mutable state, apart from the document: clock, tokens, faults, counters.

Everything here is shared between the HTTP handler threads and the test thread, so each
class guards itself with its own lock; none of them does I/O. Time always comes from the
injectable clock, which lets tests expire tokens and trigger scenarios without sleeping.
"""

from __future__ import annotations

import base64
import fnmatch
import math
import os
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "TOKEN_PATH",
    "Counters",
    "FaultPlan",
    "Faults",
    "ManualClock",
    "TokenStore",
]

Clock = Callable[[], float]

TOKEN_PATH = "/latest/api/token"


class ManualClock:
    """A clock that only moves when told to: ``clock.advance(21600)`` expires a token."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += seconds


class TokenStore:
    """Issued IMDSv2 tokens and their expiry. Token values are secrets: never log them."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._issued: list[str] = []
        self._lock = threading.Lock()

    def issue(self, ttl: int) -> str:
        # 40 random bytes give the 56-character base64url-with-padding shape of real tokens.
        token = base64.urlsafe_b64encode(os.urandom(40)).decode()
        with self._lock:
            self._expiry[token] = self._clock() + ttl
            self._issued.append(token)
        return token

    def issued(self) -> list[str]:
        """Every token issued so far, revoked or not: what a leak test looks for in logs."""
        with self._lock:
            return list(self._issued)

    def remaining(self, token: str) -> int | None:
        """Whole seconds the token has left (rounded up), or None if unknown or expired."""
        with self._lock:
            expiry = self._expiry.get(token)
            if expiry is None:
                return None
            left = expiry - self._clock()
            if left <= 0:  # expired once elapsed >= ttl
                del self._expiry[token]
                return None
            return math.ceil(left)

    def revoke_all(self) -> None:
        with self._lock:
            self._expiry.clear()


@dataclass
class _Record:
    method: str
    path: str
    status: int | None = None  # None while the request is in flight; 0 = no response


class Counters:
    """Every request the emulator received, in arrival order, with the status it got."""

    def __init__(self) -> None:
        self._records: list[_Record] = []
        self._tokens_issued = 0
        self._lock = threading.Lock()

    @property
    def tokens_issued(self) -> int:
        with self._lock:
            return self._tokens_issued

    @property
    def total(self) -> int:
        """Requests received so far; cheap, for sampling a request rate."""
        with self._lock:
            return len(self._records)

    def count(
        self, method: str | None = None, path: str | None = None, status: int | None = None
    ) -> int:
        """Requests matching every given criterion (``None`` matches anything)."""
        with self._lock:
            return sum(
                1
                for record in self._records
                if (method is None or record.method == method)
                and (path is None or record.path == path)
                and (status is None or record.status == status)
            )

    def paths(self, method: str = "GET") -> list[str]:
        with self._lock:
            return [record.path for record in self._records if record.method == method]

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
            self._tokens_issued = 0

    def arrived(self, method: str, path: str) -> _Record:
        """Record a request as it arrives; the caller fills in the status with ``answered``."""
        record = _Record(method, path)
        with self._lock:
            self._records.append(record)
        return record

    def answered(self, record: _Record, status: int) -> None:
        with self._lock:
            record.status = status

    def token_issued(self) -> None:
        with self._lock:
            self._tokens_issued += 1


FaultKind = Literal["fail", "reset", "throttle", "stall"]


@dataclass
class _OneShot:
    kind: FaultKind
    remaining: int
    path: str
    status: int = 500
    retry_after: int | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class FaultPlan:
    """What faults do to one request: wait ``delay``, then reset, answer ``status``, or
    (both unset) answer normally."""

    delay: float = 0.0
    reset: bool = False
    status: int | None = None
    retry_after: int | None = None


@dataclass
class Faults:
    """Fault injection settings; every field may be changed while the emulator runs.

    Rates are probabilities per request, drawn from the emulator's seeded RNG. They hit data
    GET/HEAD requests, and the token PUT only if ``include_token``. The ``*_next`` one-shots
    are consumed in arrival order by the next requests whose path matches their glob.
    """

    latency: float = 0.0
    error_rate: float = 0.0
    reset_rate: float = 0.0
    throttle_rate: float = 0.0
    throttle_status: int = 503
    retry_after: int | None = None
    stall_rate: float = 0.0
    stall_seconds: float = 30.0
    include_token: bool = False
    _one_shots: list[_OneShot] = field(default_factory=list, init=False, repr=False, compare=False)
    _injected: Counter[str] = field(default_factory=Counter, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def injected(self) -> dict[str, int]:
        """How many of each fault were injected so far: fail, reset, throttle, stall."""
        with self._lock:
            return dict(self._injected)

    def fail_next(self, n: int = 1, status: int = 500, path: str = "*") -> None:
        self._add(_OneShot("fail", n, path, status=status))

    def reset_next(self, n: int = 1, path: str = "*") -> None:
        self._add(_OneShot("reset", n, path))

    def throttle_next(
        self, n: int = 1, status: int = 503, retry_after: int | None = None, path: str = "*"
    ) -> None:
        self._add(_OneShot("throttle", n, path, status=status, retry_after=retry_after))

    def stall_next(self, n: int = 1, seconds: float = 30.0, path: str = "*") -> None:
        self._add(_OneShot("stall", n, path, seconds=seconds))

    def plan(self, method: str, path: str, rng: random.Random) -> FaultPlan:
        """Decide the faults for one arriving request (the one-shots first, then the rates)."""
        kind, plan = self._decide(method, path, rng)
        if kind is not None:
            with self._lock:
                self._injected[kind] += 1
        return plan

    def _decide(
        self, method: str, path: str, rng: random.Random
    ) -> tuple[FaultKind | None, FaultPlan]:
        one_shot = self._take_one_shot(path)
        if one_shot is not None:
            return one_shot.kind, self._plan_one_shot(one_shot)
        is_token_put = method == "PUT" and path == TOKEN_PATH
        if not (method in ("GET", "HEAD") or (is_token_put and self.include_token)):
            return None, FaultPlan(delay=self.latency)
        # One draw per rate, always in this order, so a seed gives a repeatable sequence.
        draws = [rng.random() for _ in range(4)]
        if draws[0] < self.reset_rate:
            return "reset", FaultPlan(delay=self.latency, reset=True)
        if draws[1] < self.throttle_rate:
            status, retry_after = self.throttle_status, self.retry_after
            return "throttle", FaultPlan(delay=self.latency, status=status, retry_after=retry_after)
        if draws[2] < self.error_rate:
            return "fail", FaultPlan(delay=self.latency, status=500)
        if draws[3] < self.stall_rate:
            return "stall", FaultPlan(delay=self.latency + self.stall_seconds)
        return None, FaultPlan(delay=self.latency)

    def _plan_one_shot(self, one_shot: _OneShot) -> FaultPlan:
        if one_shot.kind == "reset":
            return FaultPlan(delay=self.latency, reset=True)
        if one_shot.kind == "stall":
            return FaultPlan(delay=self.latency + one_shot.seconds)
        return FaultPlan(
            delay=self.latency, status=one_shot.status, retry_after=one_shot.retry_after
        )

    def _add(self, one_shot: _OneShot) -> None:
        if one_shot.remaining < 1:
            raise ValueError("n must be at least 1")
        with self._lock:
            self._one_shots.append(one_shot)

    def _take_one_shot(self, path: str) -> _OneShot | None:
        with self._lock:
            for one_shot in self._one_shots:
                if fnmatch.fnmatchcase(path, one_shot.path):
                    one_shot.remaining -= 1
                    if one_shot.remaining == 0:
                        self._one_shots.remove(one_shot)
                    return one_shot
        return None
