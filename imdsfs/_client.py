"""One metadata read: the provider's URL and credentials, retries, and the status as an error.

``ImdsClient.get(path)`` reads mount path *path* from the provider's service: it asks the
provider for the URL and the credential (EC2's IMDSv2 token), sends the request through the
`Transport`, retries transient failures with jittered backoff within the caller's deadline,
and maps the status to the `_errors` hierarchy. A 401 gets fresh credentials and one more
try. Redirects are not followed, and a 200 carrying an HTML or XHTML page (a proxy or a
captive portal in the way, never a metadata service) is not taken for a value.

Deadlines are absolute and belong to the caller (a FUSE request, a background fetch, a dump):
the client reads trio's effective deadline, and sets one of its own, ``config.timeout`` from
now, only when it is itself the start of an operation (no deadline is in effect). Everything
that reads time uses ``trio.current_time()`` so tests can drive it with a MockClock.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import httpx
import trio

from . import providers
from ._errors import (
    DeadlineExceeded,
    Forbidden,
    ImdsError,
    NotFound,
    ResponseTooLarge,
    Throttled,
    TokenError,
    Unavailable,
)
from ._paths import check_path
from ._provider import Authenticator, Bulk, ChangeFeed, Provider
from ._settings import ClientConfig
from ._transport import Reply, Transport, retry_after

__all__ = ["ImdsClient", "ImdsResponse"]

log = logging.getLogger(__name__)

_RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ImdsResponse:
    """One successful read: the exact bytes the service sent for ``path``."""

    path: str  # the mount path asked for: "placement/", "placement/region", "user-data"
    body: bytes
    fetched_at: float  # trio.current_time() when received


@dataclass
class ClientStatistics:
    """What the client did; failed reads counted by the kind of error."""

    calls: int = 0
    retries: int = 0
    not_found: int = 0
    forbidden: int = 0
    throttled: int = 0
    unavailable: int = 0
    deadline_exceeded: int = 0
    token: int = 0
    response_too_large: int = 0

    def count(self, error: ImdsError) -> None:
        for kind, name in _ERROR_FIELDS:
            if isinstance(error, kind):
                setattr(self, name, getattr(self, name) + 1)
                return


# Most specific first: DeadlineExceeded is an Unavailable.
_ERROR_FIELDS: tuple[tuple[type[ImdsError], str], ...] = (
    (NotFound, "not_found"),
    (Forbidden, "forbidden"),
    (Throttled, "throttled"),
    (DeadlineExceeded, "deadline_exceeded"),
    (Unavailable, "unavailable"),
    (TokenError, "token"),
    (ResponseTooLarge, "response_too_large"),
)


class ImdsClient:
    """Reads mount paths from a metadata service; see ``get`` for what each outcome raises.

    *provider* defaults to the one ``config.provider`` names, configured from *environ*
    (default ``os.environ``); *transport* replaces the network (a snapshot).
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        provider: Provider | None = None,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        config = ClientConfig() if config is None else config
        self.config = config
        self.provider = provider or providers.create(config, environ)
        self.endpoint = self.provider.endpoint
        self._live = transport is None  # a snapshot answers plain GETs, and never changes
        # A snapshot is no service: nothing counts its requests.
        rate_limit = self.provider.rate_limit if self._live else None
        self._transport = Transport(config, transport, rate_limit=rate_limit)
        self.authenticator: Authenticator = self.provider.authenticator(self._transport)
        self._stats = ClientStatistics()
        self._random = random.Random()

    def change_feed(self) -> ChangeFeed | None:
        """The provider's change feed over this client's transport, or None."""
        if not self._live:
            return None
        return self.provider.change_feed(self._transport, self.authenticator)

    def bulk(self, path: str) -> Bulk | None:
        """The provider's one-request read of the subtree below *path*, or None."""
        return self.provider.bulk(path) if self._live else None

    def loggable(self, path: str) -> str:
        """*path* as a log line may show it (names below a secret directory are not)."""
        return self.provider.secrets.loggable(path)

    async def get(self, path: str, *, query: str = "") -> ImdsResponse:
        """GET mount path *path*.

        200 → the response (but 200 with an HTML page → Unavailable, at once: not metadata).
        404 → NotFound, at once. 401 → fresh credentials and one more try, then Forbidden.
        400 → one more try if the provider can change how it asks (Azure's api-version).
        403 → Forbidden. 429/503 → retried (honouring Retry-After), then Throttled. Other
        5xx and connection failures → retried, then Unavailable. All of it within the
        caller's deadline; with none in effect, within ``config.timeout`` → else
        DeadlineExceeded.
        """
        self._stats.calls += 1
        try:
            check_path(path)
            if trio.current_effective_deadline() != math.inf:
                return await self._get_with_retries(path, query)  # the caller's deadline rules
            with trio.move_on_after(self.config.timeout):
                return await self._get_with_retries(path, query)
            raise DeadlineExceeded(
                f"{self.loggable(path)}: no answer within {self.config.timeout} s"
            )
        except ImdsError as exc:
            self._stats.count(exc)
            raise

    async def _get_with_retries(self, path: str, query: str) -> ImdsResponse:
        label = f"GET {self.provider.where(path)}" + (f"?{query}" if query else "")
        deadline = trio.current_effective_deadline()
        attempt = 0
        reauthorized = renegotiated = False
        while True:
            url = self._url(path, query)  # anew: the provider may have changed how it asks
            wait: float | None = None
            credential = None
            try:
                credential = await self.authenticator.credential()
                reply = await self._transport.request(
                    "GET",
                    url,
                    credential.headers,
                    label=label,
                    read_timeout=self._patience(attempt),
                )
            except (Unavailable, Throttled) as exc:  # transient, on the credential or the GET
                error: ImdsError = exc
            else:
                if reply.status == 200:
                    return self._response(path, reply)
                if reply.status == 401 and not reauthorized:
                    reauthorized = True  # the credential expired or was revoked: one more try
                    self.authenticator.rejected(credential)
                    self._stats.retries += 1
                    continue
                if reply.status == 400 and not renegotiated:
                    renegotiated = True  # Azure: an api-version the service does not have
                    if self.provider.renegotiate(url, reply.body):
                        self._stats.retries += 1
                        continue
                error = _status_error(self.loggable(path), reply.status)
                if reply.status not in _RETRYABLE:
                    raise error
                wait = retry_after(reply.headers)
            attempt += 1
            delay = max(self._backoff(attempt), wait or 0.0)
            if attempt >= self.config.max_attempts or trio.current_time() + delay >= deadline:
                raise error  # the real cause says more than a deadline would
            self._stats.retries += 1
            log.debug("%s: %s; retry %d in %.3f s", label, error, attempt, delay)
            await trio.sleep(delay)

    def _url(self, path: str, query: str) -> str:
        url = self.provider.url(path)
        if not query:
            return url
        return f"{url}{'&' if '?' in url else '?'}{query}"

    def _response(self, path: str, reply: Reply) -> ImdsResponse:
        if _is_html(reply.headers):  # the services send HTML only with a 404
            raise Unavailable(f"{self.loggable(path)}: HTTP 200 with an HTML page, not metadata")
        return ImdsResponse(path=path, body=reply.body, fetched_at=reply.received_at)

    def _patience(self, attempt: int) -> float:
        """How long attempt *attempt* (0, 1, ...) waits for an answer: ``read_timeout`` first,
        as the AWS SDKs do (a dropped packet is found out fast), doubling with each retry so a
        service that is slow, not gone, is still heard within the deadline."""
        patience = self.config.read_timeout * 2.0**attempt
        left = trio.current_effective_deadline() - trio.current_time()
        return max(0.001, min(patience, left))

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, so concurrent retries spread out."""
        cap = min(self.config.backoff_max, self.config.backoff_base * 2 ** (attempt - 1))
        return self._random.uniform(0, cap)

    def statistics(self) -> dict[str, int]:
        """Counters: calls, requests, token_puts, retries, in_flight, max_in_flight, errors.*,
        and rate_limited where the service has a rate limit."""
        auth = self.authenticator.statistics()
        transport = self._transport.statistics
        own = self._stats
        errors = {f"errors.{name}": getattr(own, name) for name in _ERROR_NAMES if name != "calls"}
        counters = {
            "calls": own.calls,
            "requests": transport.requests,
            "token_puts": auth.get("token_puts", 0),
            "retries": own.retries + auth.get("retries", 0),
            "in_flight": transport.in_flight,
            "max_in_flight": transport.max_in_flight,
            **errors,
        }
        if self._transport.rate_limited is not None:
            counters["rate_limited"] = self._transport.rate_limited
        return counters

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


_ERROR_NAMES = tuple(
    f.name for f in dataclasses.fields(ClientStatistics) if f.name not in ("calls", "retries")
)


def _is_html(headers: httpx.Headers) -> bool:
    """A 200 in HTML or XHTML comes from something in the way (a proxy, a captive portal):
    its bytes are not a value."""
    content_type: str = headers.get("Content-Type", "")
    media_type = content_type.split(";")[0].strip().lower()
    return media_type in ("text/html", "application/xhtml+xml") or media_type.endswith("+html")


def _status_error(path: str, status: int) -> ImdsError:
    if status == 404:
        return NotFound(path)
    if status == 401:
        return Forbidden(f"{path}: HTTP 401 even with fresh credentials")
    if status == 403:
        return Forbidden(f"{path}: HTTP 403 (the service is off, or refused the request)")
    if status in (429, 503):
        return Throttled(f"{path}: throttled (HTTP {status})")
    return Unavailable(f"{path}: HTTP {status}")
