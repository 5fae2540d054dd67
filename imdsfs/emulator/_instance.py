"""The live instance: the document plus what changes it over time.

Scenarios (spot interruption, rebalance, maintenance event) and periodic credential rotation
are evaluated lazily: each read first applies whatever has become due on the emulator clock.
That keeps the emulator free of timer threads and makes a ManualClock drive everything.

The emulator clock (possibly manual) decides *when* things happen; the values IMDS shows
(``"time"`` of a spot notice, credential ``Expiration``) are real UTC wall-clock times, as
clients compare them with their own clock.
"""

from __future__ import annotations

import json
import random
import string
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .._document import InstanceDocument
from ._defaults import jackson_dumps

__all__ = ["EVENT_CODES", "SPOT_ACTIONS", "LiveInstance"]

SPOT_ACTIONS = ("terminate", "stop", "hibernate")
# Scheduled event codes (the EC2 User Guide's list) and the description EC2 shows for each.
EVENT_CODES = {
    "instance-reboot": "scheduled reboot",
    "system-reboot": "scheduled reboot",
    "system-maintenance": "scheduled maintenance",
    "instance-retirement": "scheduled retirement",
    "instance-stop": "scheduled stop",
}
CREDENTIAL_DIRS = (
    "meta-data/iam/security-credentials",
    "meta-data/identity-credentials/ec2/security-credentials",
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass
class _Cycle:
    values: tuple[bytes, ...]
    served: int = 0

    def next(self) -> bytes:
        value = self.values[self.served % len(self.values)]
        self.served += 1
        return value


@dataclass
class _Scheduled:
    due: float
    apply: Callable[[], None]


class LiveInstance:
    """The document behind a lock, with scenarios applied when they fall due."""

    def __init__(
        self, document: InstanceDocument, clock: Callable[[], float], rng: random.Random
    ) -> None:
        self._document = document
        self._clock = clock
        self._rng = rng  # this instance's own generator, seeded by the emulator
        self._rng_lock = threading.Lock()
        self._lock = threading.RLock()
        self._scheduled: list[_Scheduled] = []
        self._rotation_period: float | None = None
        self._next_rotation = 0.0
        self._cycles: dict[str, _Cycle] = {}

    def alternate(self, path: str, values: Sequence[bytes]) -> None:
        """Serve *values* for *path* in turn, one per read: a value that changes (and changes
        length) on every fetch, as credentials do across rotations."""
        if not values:
            raise ValueError("alternate needs at least one value")
        with self._lock:
            self._document.set(path, values[0])
            self._cycles[path] = _Cycle(tuple(values))

    def read(self, path: str) -> bytes | None:
        """``GET /latest/<path>`` right now: bytes, or None for 404."""
        with self._lock:
            self._apply_due()
            cycle = self._cycles.get(path.lstrip("/"))
            if cycle is not None and self._document.read(path) is not None:
                self._document.set(path, cycle.next())
            return self._document.read(path)

    def leaves(self) -> dict[str, bytes]:
        with self._lock:
            self._apply_due()
            return dict(self._document.every_leaf())

    def set(self, path: str, value: str | bytes | Mapping[str, object]) -> None:
        with self._lock:
            self._cycles.pop(path.lstrip("/"), None)
            self._document.set(path, value)

    def delete(self, path: str) -> None:
        with self._lock:
            self._cycles.pop(path.lstrip("/"), None)
            self._document.delete(path)

    # -- scenarios ------------------------------------------------------------------------

    def schedule(self, after: float, apply: Callable[[], None]) -> None:
        with self._lock:
            self._scheduled.append(_Scheduled(self._clock() + after, apply))

    def spot_interruption(self, action: str) -> None:
        when = _iso(_utc_now() + timedelta(minutes=2))  # the two-minute warning
        notice = json.dumps({"action": action, "time": when})
        self._document.set("meta-data/spot/instance-action", notice)
        self._document.set("meta-data/spot/termination-time", when)

    def rebalance(self) -> None:
        notice = json.dumps({"noticeTime": _iso(_utc_now())})
        self._document.set("meta-data/events/recommendations/rebalance", notice)

    def maintenance_event(self, code: str) -> None:
        not_before = _utc_now() + timedelta(days=1)
        event = {
            "NotBefore": _event_time(not_before),
            "Code": code,
            "Description": EVENT_CODES[code],
            "EventId": "instance-event-" + self._random_text("0123456789abcdef", 17),
            "NotAfter": _event_time(not_before + timedelta(hours=2)),
            "State": "active",
        }
        self._document.set("meta-data/events/maintenance/scheduled", jackson_dumps([event]))

    # -- credentials ----------------------------------------------------------------------

    def set_rotation_period(self, period: float | None) -> None:
        if period is not None and period <= 0:
            raise ValueError("the rotation period must be positive")
        with self._lock:
            self._rotation_period = period
            self._next_rotation = self._clock() + (period or 0.0)

    @property
    def rotation_period(self) -> float | None:
        return self._rotation_period

    def rotate_credentials(self) -> None:
        """New keys, token and times for every role; leaves that are not JSON stay as they are."""
        with self._lock:
            now = _utc_now()
            for directory in CREDENTIAL_DIRS:
                for path, value in list(self._document.leaves(directory)):
                    credentials = _json_object(value)
                    if credentials is not None:
                        credentials.update(self._fresh_credentials(now))
                        self._document.set(path, jackson_dumps(credentials))

    def _fresh_credentials(self, now: datetime) -> dict[str, str]:
        upper_digits = string.ascii_uppercase + "234567"
        base64ish = string.ascii_letters + string.digits + "+/"
        return {
            "LastUpdated": _iso(now),
            "AccessKeyId": "ASIA" + self._random_text(upper_digits, 16),
            "SecretAccessKey": self._random_text(base64ish, 40),
            # Session tokens vary in length, so a rotation changes the document's length too.
            "Token": "IQoJb3JpZ2luX2VjE" + self._random_text(base64ish, self._token_length()),
            "Expiration": _iso(now + timedelta(hours=6)),
        }

    def _token_length(self) -> int:
        with self._rng_lock:
            return self._rng.randrange(600, 1400)

    def _random_text(self, alphabet: str, length: int) -> str:
        with self._rng_lock:
            return "".join(self._rng.choice(alphabet) for _ in range(length))

    def _apply_due(self) -> None:
        now = self._clock()
        due = [item for item in self._scheduled if item.due <= now]
        for item in due:
            self._scheduled.remove(item)
            item.apply()
        if self._rotation_period is not None and now >= self._next_rotation:
            self.rotate_credentials()
            # One rotation however many periods passed; the next one is a period from now.
            self._next_rotation = now + self._rotation_period


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _event_time(moment: datetime) -> str:
    """``21 Jan 2019 09:00:43 GMT``: no zero padding on the day, English month names."""
    return f"{moment.day} {_MONTHS[moment.month - 1]} {moment:%Y %H:%M:%S} GMT"


def _json_object(value: bytes) -> dict[str, object] | None:
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
