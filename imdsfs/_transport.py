"""Sending one HTTP request: bounded concurrency and size, no connection reuse, errors mapped.

The httpx transport is driven directly rather than through ``httpx.AsyncClient``: the
client's cookie jar, auth flow, redirect loop and proxy mounts are all things a metadata
service must not have, and skipping them cut the CPU per request by a fifth (672 to 533 µs,
measured against the emulator). Proxies and redirects are therefore never in play, whatever
the environment says. httpx's (and h11's) exceptions become ours in one place,
`_map_httpx_exceptions`. A service's request-rate limit, where its provider declares one
(Azure), is kept here too, where every request passes (see `_ratelimit`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import httpx
import trio

from ._errors import ResponseTooLarge, TokenError, Unavailable
from ._ratelimit import RateLimit, RateLimiter
from ._settings import ClientConfig

__all__ = ["Reply", "Transport", "TransportStatistics", "retry_after"]

log = logging.getLogger(__name__)

_DEFAULT_HEADERS = {"User-Agent": "imdsfs", "Accept-Encoding": "identity"}
# ASCII digits, and few of them: str.isdigit() accepts "²", which int() refuses.
SMALL_NUMBER = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class Reply:
    """One answer, read in full: the exact bytes, undecoded."""

    status: int
    headers: httpx.Headers
    body: bytes
    received_at: float  # trio clock


@dataclass
class TransportStatistics:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


class Transport:
    """Sends requests, at most ``config.max_concurrency`` at once, each on a connection of its
    own: metadata services close every connection, and one kept open could desynchronise (a
    server answering twice would hand one path's body to the next request). With a
    *rate_limit*, no more than it allows, as the service counts them."""

    def __init__(
        self,
        config: ClientConfig,
        transport: httpx.AsyncBaseTransport | None = None,  # None: the network
        *,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self._http = transport or httpx.AsyncHTTPTransport(
            trust_env=False,  # nor SSL_CERT_FILE and friends
            limits=httpx.Limits(
                max_connections=config.max_concurrency, max_keepalive_connections=0
            ),
        )
        self._timeouts = {
            "connect": config.connect_timeout,
            "read": config.read_timeout,
            "write": config.read_timeout,
            "pool": config.connect_timeout,
        }
        self._limiter = trio.CapacityLimiter(config.max_concurrency)
        self._rate = RateLimiter(rate_limit) if rate_limit is not None else None
        self._max_body = config.max_body
        self.statistics = TransportStatistics()

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        label: str,
        credential_request: bool = False,
        max_body: int | None = None,
        read_timeout: float | None = None,
    ) -> Reply:
        """*label* names the request in logs and errors (a URL may hold a secret's name);
        an unanswered *credential_request* is a TokenError (EC2's hop limit).
        *read_timeout* replaces the configured one for this request."""
        rate = self._rate
        async with rate.place(label) if rate is not None else contextlib.nullcontext():
            reply = await self._request(
                method, url, headers, label, credential_request, max_body, read_timeout
            )
        if rate is not None and reply.status == 429:  # the service counted more than we did
            rate.pause(retry_after(reply.headers) or rate.limit.per)
        return reply

    @property
    def rate_limited(self) -> int | None:
        """Requests that waited for the service's rate limit; None when it declares none."""
        return self._rate.waits if self._rate is not None else None

    async def _request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        label: str,
        credential_request: bool,
        max_body: int | None,
        read_timeout: float | None,
    ) -> Reply:
        stats = self.statistics
        async with self._limiter:
            stats.requests += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                with _map_httpx_exceptions(label, credential_request):
                    timeouts = self._timeouts
                    if read_timeout is not None:
                        timeouts = {**timeouts, "read": read_timeout, "write": read_timeout}
                    reply = await self._send(method, url, headers, label, max_body, timeouts)
            finally:
                stats.in_flight -= 1
        log.debug("%s -> %d (%d bytes)", label, reply.status, len(reply.body))
        return reply

    async def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        label: str,
        limit: int | None,
        timeouts: Mapping[str, float],
    ) -> Reply:
        request = httpx.Request(
            method, url, headers={**_DEFAULT_HEADERS, **headers}, extensions={"timeout": timeouts}
        )
        response = await self._http.handle_async_request(request)
        try:
            body = await _read_bounded(response, label, limit or self._max_body)
        finally:
            await response.aclose()
        return Reply(response.status_code, response.headers, body, trio.current_time())

    async def aclose(self) -> None:
        await self._http.aclose()


def retry_after(headers: httpx.Headers) -> float | None:
    """Retry-After in seconds; the HTTP-date form is ignored (IMDS sends seconds if anything)."""
    try:
        seconds = float(headers.get("Retry-After", ""))
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@contextlib.contextmanager
def _map_httpx_exceptions(label: str, credential_request: bool) -> Iterator[None]:
    """The one place where httpx's exceptions (and h11's, through it) become ours."""
    try:
        yield
    except httpx.TimeoutException as exc:
        if credential_request:  # the provider knows what an unanswered one means
            raise TokenError(f"{label}: no answer ({type(exc).__name__})") from exc
        raise Unavailable(f"{label}: {type(exc).__name__} (timed out)") from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # a broken connection, answer or URL
        raise Unavailable(f"{label}: {type(exc).__name__}: {exc}") from exc
    except (ValueError, UnicodeError) as exc:  # h11 or httpcore refusing what was sent
        raise Unavailable(f"{label}: malformed response: {exc}") from exc


async def _read_bounded(response: httpx.Response, label: str, limit: int) -> bytes:
    """The raw body (no decoding: the bytes are the file), refused as soon as it passes limit."""
    declared = response.headers.get("Content-Length", "")
    if SMALL_NUMBER.fullmatch(declared) and int(declared) > limit:
        raise ResponseTooLarge(f"{label}: {declared} bytes, more than the {limit} allowed")
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > limit:
            raise ResponseTooLarge(f"{label}: body exceeds the {limit} bytes allowed")
    return bytes(body)
