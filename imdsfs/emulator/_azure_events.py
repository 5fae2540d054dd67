"""Azure Scheduled Events: the ``/metadata/scheduledevents`` document and how it changes.

The document is ``{"DocumentIncarnation": N, "Events": [...]}``; N grows by one whenever the
events change (one added, approved, started or completed). Events are scheduled on the
emulator clock and applied lazily, when the document is next read, like EC2's scenarios; the
times clients see (``NotBefore``) are real UTC, in RFC 1123 form.

Facts from Microsoft's Scheduled Events article: the event fields and the api-version that
added ``Description`` (2019-04-01), ``EventSource`` (2019-08-01) and ``DurationInSeconds``
(2020-07-01); the minimum notice of each type; ``NotBefore`` is blank once an event has
started; an approval (``POST`` with ``StartRequests``) lets it start. Our decisions where the
article is silent: the document starts at incarnation 1 with no events (the article's first
example); an approved event turns ``Started`` at once; ``Preempt`` and ``Terminate`` events
are hidden from api-versions older than the ones that introduced them (2017-11-01,
2019-01-01); the Preempt and Terminate descriptions are worded by us.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

__all__ = ["EVENTS_VERSIONS", "EVENT_TYPES", "ScheduledEvents"]

# The api-versions /metadata/scheduledevents accepts, oldest first.
EVENTS_VERSIONS: tuple[str, ...] = (
    "2017-03-01",
    "2017-08-01",
    "2017-11-01",
    "2019-01-01",
    "2019-04-01",
    "2019-08-01",
    "2020-07-01",
)


@dataclass(frozen=True)
class _Kind:
    notice: timedelta  # the minimum notice the article gives for the type
    duration: int  # DurationInSeconds; -1 means unknown or not applicable
    description: str
    since: str  # the first api-version that knows the type


EVENT_TYPES: dict[str, _Kind] = {
    "Freeze": _Kind(
        timedelta(minutes=15),
        5,
        "Virtual machine is being paused because of a memory-preserving Live Migration operation.",
        "2017-03-01",
    ),
    "Reboot": _Kind(
        timedelta(minutes=15), -1, "Host server is undergoing maintenance.", "2017-03-01"
    ),
    "Redeploy": _Kind(
        timedelta(minutes=10), -1, "Host server is undergoing an emergency repair.", "2017-03-01"
    ),
    "Preempt": _Kind(
        timedelta(seconds=30), -1, "Virtual machine is being evicted (Spot VM).", "2017-11-01"
    ),
    "Terminate": _Kind(
        timedelta(minutes=5), -1, "Virtual machine is going to be deleted.", "2019-01-01"
    ),
}
_USER_REBOOT = "Virtual machine is going to be restarted as requested by authorized user."
_FIELD_VERSIONS = {
    "Description": "2019-04-01",
    "EventSource": "2019-08-01",
    "DurationInSeconds": "2020-07-01",
}


@dataclass
class _Event:
    event_id: str
    event_type: str
    resources: list[str]
    not_before: str
    description: str
    source: str
    duration: int
    status: str = "Scheduled"

    def as_json(self, version: str) -> dict[str, object]:
        full: dict[str, object] = {
            "EventId": self.event_id,
            "EventStatus": self.status,
            "EventType": self.event_type,
            "ResourceType": "VirtualMachine",
            "Resources": list(self.resources),
            "NotBefore": self.not_before,
            "Description": self.description,
            "EventSource": self.source,
            "DurationInSeconds": self.duration,
        }
        return {k: v for k, v in full.items() if _FIELD_VERSIONS.get(k, "") <= version}


@dataclass
class _Pending:
    due: float
    event: _Event
    delay: timedelta = field(default_factory=timedelta)


class ScheduledEvents:
    """The live events document. Thread-safe; every change bumps the incarnation once."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._incarnation = 1
        self._events: list[_Event] = []
        self._pending: list[_Pending] = []

    def schedule(
        self,
        after: float,
        event_type: str,
        resources: Sequence[str],
        *,
        source: str = "Platform",
        duration: int | None = None,
        description: str | None = None,
    ) -> str:
        """Add an event ``after`` seconds from now (emulator clock); returns its EventId."""
        kind = EVENT_TYPES.get(event_type)
        if kind is None:
            raise ValueError(f"event_type must be one of {', '.join(EVENT_TYPES)}")
        if source not in ("Platform", "User"):
            raise ValueError("source must be Platform or User")
        if after < 0:
            raise ValueError("after must be >= 0 seconds")
        if description is None:
            user_reboot = event_type == "Reboot" and source == "User"
            description = _USER_REBOOT if user_reboot else kind.description
        event = _Event(
            event_id=str(uuid.uuid4()).upper(),
            event_type=event_type,
            resources=list(resources),
            not_before="",  # set when it appears: the notice counts from then
            description=description,
            source=source,
            duration=kind.duration if duration is None else duration,
        )
        with self._lock:
            self._pending.append(_Pending(self._clock() + after, event, kind.notice))
        return event.event_id

    def document(self, version: str) -> dict[str, object]:
        """``{"DocumentIncarnation": N, "Events": [...]}`` as ``version`` shows it."""
        with self._lock:
            self._apply_due()
            events = [
                event.as_json(version)
                for event in self._events
                if EVENT_TYPES[event.event_type].since <= version
            ]
            return {"DocumentIncarnation": self._incarnation, "Events": events}

    @property
    def incarnation(self) -> int:
        with self._lock:
            self._apply_due()
            return self._incarnation

    def approve(self, event_ids: Sequence[str]) -> bool:
        """Start each named event (a ``StartRequests`` POST); False if any id is unknown."""
        with self._lock:
            self._apply_due()
            by_id = {event.event_id.upper(): event for event in self._events}
            if not event_ids or any(i.upper() not in by_id for i in event_ids):
                return False
            changed = False
            for event_id in event_ids:
                event = by_id[event_id.upper()]
                if event.status != "Started":
                    event.status, event.not_before, changed = "Started", "", True
            if changed:
                self._incarnation += 1
            return True

    def start(self, event_id: str) -> None:
        """The event starts now (as when its NotBefore passes); KeyError if unknown."""
        if not self.approve([event_id]):
            raise KeyError(event_id)

    def complete(self, event_id: str) -> None:
        """The event is over: it leaves the document; KeyError if unknown."""
        with self._lock:
            self._apply_due()
            for event in self._events:
                if event.event_id.upper() == event_id.upper():
                    self._events.remove(event)
                    self._incarnation += 1
                    return
        raise KeyError(event_id)

    def _apply_due(self) -> None:
        now = self._clock()
        for pending in [p for p in self._pending if p.due <= now]:
            self._pending.remove(pending)
            moment = datetime.now(UTC).replace(microsecond=0) + pending.delay
            pending.event.not_before = format_datetime(moment, usegmt=True)
            self._events.append(pending.event)
            self._incarnation += 1
