"""The live GCE instance: the tree behind a lock, what changes it over time, and the
credentials the metadata server mints per request.

As in the EC2 emulator, scenarios (a maintenance event, a preemption) and token rotation are
evaluated lazily on the emulator clock, so a ``ManualClock`` drives them without timer threads.
What is new is waiting: every change bumps a generation number and wakes the long-polls
(``wait_for_change``) blocked in ``wait``; a waiter also re-checks the scenarios each time it
wakes, so one falling due on a running clock wakes it within one poll interval of the server.

The emulator clock decides *when* things happen (and ``expires_in`` of an access token); the
times inside an identity token (``iat``, ``exp``) are real Unix time, which clients compare with
their own clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import string
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ._gce_document import GceDocument
from ._state import Counters

__all__ = ["MAINTENANCE_EVENTS", "TOKEN_LIFETIME", "LiveGce"]

T = TypeVar("T")

# instance/maintenance-event values (NONE, then one of the others while an event is due).
MAINTENANCE_EVENTS = ("NONE", "MIGRATE_ON_HOST_MAINTENANCE", "TERMINATE_ON_HOST_MAINTENANCE")
# An access token's expires_in when it is minted; it counts down to 1, then a new one is minted
# (the metadata server never hands out an expired token).
TOKEN_LIFETIME = 3599
_TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"


@dataclass
class _Scheduled:
    due: float
    apply: Callable[[GceDocument], None]


@dataclass
class _AccessToken:
    value: str
    minted: float  # on the emulator clock


class LiveGce:
    """The tree with its scenarios, tokens and change notification; safe across threads."""

    def __init__(
        self,
        tree: GceDocument,
        clock: Callable[[], float],
        rng: random.Random,
        counters: Counters,
    ) -> None:
        self._tree = tree
        self._clock = clock
        self._rng = rng
        self._counters = counters  # counts the access tokens minted
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._generation = 0
        self._scheduled: list[_Scheduled] = []
        self._tokens: dict[str, _AccessToken] = {}  # by service-account email
        self._rotation_period: float | None = None
        self._next_rotation = 0.0
        self._started = int(time.time())  # instance_creation_timestamp in identity tokens

    # -- the tree ---------------------------------------------------------------------------

    def read(self, reader: Callable[[GceDocument], T]) -> tuple[T, int]:
        """``reader(tree)`` with every due scenario applied first, and the generation it saw."""
        with self._lock:
            self._apply_due()
            return reader(self._tree), self._generation

    def change(self, changer: Callable[[GceDocument], None]) -> None:
        """Apply a change and wake every waiter."""
        with self._lock:
            changer(self._tree)
            self._changed_now()

    def wait(self, generation: int, seconds: float) -> int:
        """Block until the tree has changed since ``generation`` or ``seconds`` pass; return the
        generation now. Scenarios due meanwhile count as changes."""
        with self._changed:
            self._apply_due()
            if self._generation == generation:
                self._changed.wait(seconds)
                self._apply_due()
            return self._generation

    def wake_all(self) -> None:
        """Wake every waiter at once (the server is stopping)."""
        with self._changed:
            self._changed.notify_all()

    # -- scenarios --------------------------------------------------------------------------

    def schedule(self, after: float, apply: Callable[[GceDocument], None]) -> None:
        with self._lock:
            self._scheduled.append(_Scheduled(self._clock() + after, apply))

    def _apply_due(self) -> None:
        now = self._clock()
        due = [item for item in self._scheduled if item.due <= now]
        for item in due:
            self._scheduled.remove(item)
            item.apply(self._tree)
        if due:
            self._changed_now()
        if self._rotation_period is not None and now >= self._next_rotation:
            self._tokens.clear()  # tokens are not in the tree: no generation change
            # One rotation however many periods passed; the next one is a period from now.
            self._next_rotation = now + self._rotation_period

    def _changed_now(self) -> None:
        self._generation += 1
        self._changed.notify_all()

    # -- access tokens ----------------------------------------------------------------------

    def set_rotation_period(self, period: float | None) -> None:
        if period is not None and period <= 0:
            raise ValueError("the rotation period must be positive")
        with self._lock:
            self._rotation_period = period
            self._next_rotation = self._clock() + (period or 0.0)

    @property
    def rotation_period(self) -> float | None:
        return self._rotation_period

    def rotate_tokens(self) -> None:
        """Every service account gets a new access token at its next request."""
        with self._lock:
            self._tokens.clear()

    def access_token(self, account: str) -> bytes | None:
        """The ``token`` endpoint of the account directory ``account``: compact JSON with
        ``expires_in`` counting down on the emulator clock; None if there is no such account.
        ``default`` and the account's email share one token, as they are one account."""
        with self._lock:
            self._apply_due()
            email = self._email(account)
            if email is None:
                return None
            now = self._clock()
            token = self._tokens.get(email)
            if token is None or now - token.minted >= TOKEN_LIFETIME:
                token = self._tokens[email] = _AccessToken(self._mint(), now)
                self._counters.token_issued()
            expires_in = TOKEN_LIFETIME - math.floor(now - token.minted)
        body = {"access_token": token.value, "expires_in": expires_in, "token_type": "Bearer"}
        return json.dumps(body, separators=(",", ":")).encode()

    def _mint(self) -> str:
        # Real tokens are ``ya29.`` and a long base64url tail whose length varies a little.
        length = self._rng.randrange(160, 240)
        return "ya29.c." + "".join(self._rng.choice(_TOKEN_ALPHABET) for _ in range(length))

    def _email(self, account: str) -> str | None:
        email = self._tree.value(f"instance/service-accounts/{account}/email")
        return email if isinstance(email, str) else None

    # -- identity tokens --------------------------------------------------------------------

    def identity(self, account: str, audience: str, full: bool, licenses: bool) -> bytes | None:
        """A JWT-shaped identity token for ``audience`` (RS256 header, Google's claims, a
        signature that is random bytes: nothing can verify it); None if there is no account."""
        with self._lock:
            self._apply_due()
            email = self._email(account)
            if email is None:
                return None
            instance = self._tree.value("instance")
            project = self._tree.value("project")
            signature = self._rng.randbytes(256)
        now = int(time.time())
        subject = str(int(hashlib.sha256(email.encode()).hexdigest(), 16) % 10**21).zfill(21)
        claims: dict[str, object] = {
            "aud": audience,
            "azp": subject,
            "email": email,
            "email_verified": True,
            "exp": now + 3600,
            "iat": now,
            "iss": "https://accounts.google.com",
            "sub": subject,
        }
        if full and isinstance(instance, dict) and isinstance(project, dict):
            claims["google"] = {"compute_engine": self._compute_engine(instance, project, licenses)}
        key_id = hashlib.sha1(b"imdsfs-gce-emulator", usedforsecurity=False).hexdigest()
        header = {"alg": "RS256", "kid": key_id, "typ": "JWT"}
        parts = [_b64(_compact(header)), _b64(_compact(claims))]
        return ".".join([*parts, _b64(signature)]).encode()

    def _compute_engine(
        self, instance: Mapping[str, object], project: Mapping[str, object], licenses: bool
    ) -> dict[str, object]:
        zone = instance.get("zone")
        claims: dict[str, object] = {
            "instance_creation_timestamp": self._started,
            "instance_id": str(instance.get("id")),
            "instance_name": instance.get("name"),
            "project_id": project.get("projectId"),
            "project_number": project.get("numericProjectId"),
            "zone": zone.rsplit("/", 1)[-1] if isinstance(zone, str) else zone,
        }
        found = instance.get("licenses")
        if licenses and isinstance(found, list):
            claims["license_id"] = [item["id"] for item in found if isinstance(item, dict)]
        return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
