"""The HTTP client for IMDS: tokens, retries, deadlines, and status codes turned into exceptions.

Three layers, each small enough to reason about on its own:

- ``_Transport`` sends one request: it bounds concurrency (IMDS drops packets past 1024 per
  second per interface), bounds body size while streaming, and maps httpx's exceptions to
  ours in one function, ``_map_httpx_exceptions``.
- ``TokenManager`` owns the IMDSv2 token: one PUT serves every concurrent caller, the token is
  refreshed a little before it expires, and a 401 drops it. A PUT unanswered twice (the hop
  limit) is a TokenError, remembered for a few seconds so reads fail fast rather than each
  wait for another PUT.
- ``ImdsClient.get`` is one metadata read: path check, retries with jittered backoff within
  the caller's deadline, and the status code mapped to the ``imdsfs._errors`` hierarchy.
  Redirects are not followed, and a 200 carrying an HTML or XHTML page (a proxy or portal in
  the way) is not taken for a value.

Deadlines are absolute and belong to the caller (a FUSE request, a background fetch, a dump):
the client reads trio's effective deadline and sets one of its own, ``config.timeout`` from
now, only when it is itself the start of an operation (no deadline is in effect).

Everything that reads time uses ``trio.current_time()`` so tests can drive it with a MockClock.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import logging
import math
import os
import random
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import httpx
import trio

from ._errors import (
    ConfigError,
    DeadlineExceeded,
    Forbidden,
    ImdsError,
    NotFound,
    ResponseTooLarge,
    Throttled,
    TokenError,
    Unavailable,
)
from ._flight import SingleFlight
from ._paths import loggable

__all__ = [
    "ClientConfig",
    "ImdsClient",
    "ImdsResponse",
    "TokenManager",
    "check_enabled",
    "resolve_endpoint",
]

log = logging.getLogger(__name__)

ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
ENDPOINT_MODE_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"
V1_DISABLED_ENV = "AWS_EC2_METADATA_V1_DISABLED"
DISABLED_ENV = "AWS_EC2_METADATA_DISABLED"
ENDPOINTS = {"ipv4": "http://169.254.169.254", "ipv6": "http://[fd00:ec2::254]"}

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TOKEN_TTL = 21600
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]{1,1024}")  # real tokens have 56
_MAX_TOKEN_BODY = 4096
# ASCII digits, and few of them: str.isdigit() accepts "²", which int() refuses.
_SMALL_NUMBER = re.compile(r"[0-9]{1,12}")

_NO_TOKEN_ANSWER = (
    "the IMDSv2 token request (PUT /latest/api/token) got no answer. The usual cause is the "
    "hop limit: from a container the answer needs one more hop, so set "
    "HttpPutResponseHopLimit >= 2 (aws ec2 modify-instance-metadata-options "
    "--instance-id <id> --http-put-response-hop-limit 2). Otherwise this host is not on EC2 "
    "or the endpoint is wrong."
)


# -- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConfig:
    """Everything that shapes how the client talks to IMDS; validated on construction."""

    endpoint: str | None = None  # flag value; None: environment, then endpoint_mode
    endpoint_mode: str | None = None  # "IPv4" | "IPv6"; None: environment, then IPv4
    token_ttl: int = MAX_TOKEN_TTL
    allow_imdsv1: bool = False  # and only if AWS_EC2_METADATA_V1_DISABLED is not true
    connect_timeout: float = 1.0
    read_timeout: float = 1.0  # per attempt; IMDS answers in milliseconds, the AWS SDKs wait 1 s
    # Seconds one get() (retries and token included) or one token request may take when its
    # caller set no deadline: the length of a background fetch.
    timeout: float = 5.0
    max_attempts: int = 4
    backoff_base: float = 0.05
    backoff_max: float = 1.0
    max_body: int = 1 << 20
    max_concurrency: int = 8  # requests in flight at once, token PUTs included
    # After a TokenError, fail at once for this long rather than wait on another unanswered
    # PUT (the hop limit) on every read.
    token_retry_after: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.token_ttl <= MAX_TOKEN_TTL:
            raise ConfigError(f"token_ttl must be 1..{MAX_TOKEN_TTL} seconds")
        for name in ("connect_timeout", "read_timeout", "timeout", "token_retry_after"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of seconds")
        for name in ("backoff_base", "backoff_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a number of seconds >= 0")
        for name in ("max_attempts", "max_body", "max_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")


def resolve_endpoint(config: ClientConfig, environ: Mapping[str, str]) -> str:
    """The base URL: the flag, else ``AWS_EC2_METADATA_SERVICE_ENDPOINT``, else by mode."""
    if config.endpoint is not None:
        return _check_endpoint(config.endpoint)
    if environ.get(ENDPOINT_ENV):  # an empty variable counts as unset, as in the AWS SDKs
        return _check_endpoint(environ[ENDPOINT_ENV])
    mode = config.endpoint_mode or environ.get(ENDPOINT_MODE_ENV) or "IPv4"
    try:
        return ENDPOINTS[mode.lower()]
    except KeyError:
        raise ConfigError(f"endpoint mode must be IPv4 or IPv6, not {mode!r}") from None


def _check_endpoint(raw: str) -> str:
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"bad IMDS endpoint {raw!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"bad IMDS endpoint {raw!r}: need http://host[:port]")
    if url.port is not None and not 0 < url.port < 65536:
        raise ConfigError(f"bad IMDS endpoint {raw!r}: port out of range")
    if url.query or url.fragment:
        raise ConfigError(f"bad IMDS endpoint {raw!r}: no query or fragment allowed")
    return raw.rstrip("/")


def check_enabled(environ: Mapping[str, str]) -> None:
    """Refuse to touch IMDS when ``AWS_EC2_METADATA_DISABLED=true`` says not to (the AWS SDKs'
    convention: the host's owner turned IMDS access off for this environment)."""
    if environ.get(DISABLED_ENV, "").strip().lower() == "true":
        raise ConfigError(f"{DISABLED_ENV}=true: IMDS access is turned off here")


def _v1_refusal(config: ClientConfig, environ: Mapping[str, str]) -> str | None:
    """Why the IMDSv1 fallback is off, or None when it is on."""
    if not config.allow_imdsv1:
        return "the IMDSv1 fallback is not enabled (allow_imdsv1)"
    if environ.get(V1_DISABLED_ENV, "").strip().lower() == "true":
        return f"{V1_DISABLED_ENV}=true forbids the IMDSv1 fallback"
    return None


# Path segments come from IMDS listings; none legitimately holds these. Refusing them keeps a
# path from escaping /latest/ or growing a query, and "%" from smuggling either in encoded.
_BAD_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f?#%\\]")


def has_unfetchable_chars(text: str) -> bool:
    """Whether *text* holds a character no IMDS path may carry (see `check_path`)."""
    return _BAD_PATH_CHARS.search(text) is not None


def check_path(path: str) -> None:
    """Refuse a path that is not a plain IMDS path relative to ``/latest/``."""
    segments = path.removesuffix("/").split("/") if path else []
    if has_unfetchable_chars(path) or any(s in ("", ".", "..") for s in segments):
        raise ConfigError(f"invalid IMDS path {path!r}")


# -- transport -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: httpx.Headers
    body: bytes
    received_at: float


@contextlib.contextmanager
def _map_httpx_exceptions(method: str, url: str, *, token_request: bool) -> Iterator[None]:
    """The one place where httpx's exceptions become ours."""
    shown = _shown(url)
    try:
        yield
    except httpx.TimeoutException as exc:
        if token_request:  # IMDS never stalls a PUT; an unanswered one is the hop limit
            raise TokenError(_NO_TOKEN_ANSWER) from exc
        raise Unavailable(f"{method} {shown}: {type(exc).__name__} (timed out)") from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # a broken connection, answer or URL
        raise Unavailable(f"{method} {shown}: {type(exc).__name__}: {exc}") from exc
    except (ValueError, UnicodeError) as exc:  # h11 or httpcore refusing what was sent
        raise Unavailable(f"{method} {shown}: malformed response: {exc}") from exc


class _Transport:
    """Sends requests, at most ``max_concurrency`` at once, counting them in ``stats``.

    It drives an httpx transport directly rather than through ``httpx.AsyncClient``: the
    client's cookie jar, auth flow, redirect loop and proxy mounts are all things IMDS must not
    have, and skipping them cut the client's CPU per request by a fifth (672 to 533 µs,
    measured against the emulator). Proxies and redirects are therefore never in play,
    whatever the environment says.
    """

    def __init__(
        self,
        config: ClientConfig,
        stats: Counter[str],
        transport: httpx.AsyncBaseTransport | None = None,  # None: the network
    ) -> None:
        self._http = transport or httpx.AsyncHTTPTransport(
            trust_env=False,  # nor SSL_CERT_FILE and friends
            # IMDS closes every connection. One kept open could also desynchronise: a server
            # that answers twice would hand one path's body to the next request.
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
        self._max_body = config.max_body
        self._stats = stats

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        token_request: bool = False,
        max_body: int | None = None,
    ) -> _Reply:
        async with self._limiter:
            self._stats["requests"] += 1
            self._stats["in_flight"] += 1
            self._stats["max_in_flight"] = max(
                self._stats["max_in_flight"], self._stats["in_flight"]
            )
            try:
                with _map_httpx_exceptions(method, url, token_request=token_request):
                    request = httpx.Request(
                        method,
                        url,
                        headers={**_DEFAULT_HEADERS, **headers},
                        extensions={"timeout": self._timeouts},
                    )
                    response = await self._http.handle_async_request(request)
                    try:
                        body = await _read_bounded(response, url, max_body or self._max_body)
                    finally:
                        await response.aclose()
            finally:
                self._stats["in_flight"] -= 1
        log.debug("%s %s -> %d (%d bytes)", method, _shown(url), response.status_code, len(body))
        return _Reply(response.status_code, response.headers, body, trio.current_time())

    async def aclose(self) -> None:
        await self._http.aclose()


_DEFAULT_HEADERS = {"User-Agent": "imdsfs", "Accept-Encoding": "identity"}


async def _read_bounded(response: httpx.Response, url: str, limit: int) -> bytes:
    """The raw body (no decoding: the bytes are the file), refused as soon as it passes limit."""
    declared = response.headers.get("Content-Length", "")
    if _SMALL_NUMBER.fullmatch(declared) and int(declared) > limit:
        raise ResponseTooLarge(f"{_shown(url)}: {declared} bytes, more than the {limit} allowed")
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > limit:
            raise ResponseTooLarge(f"{_shown(url)}: body exceeds the {limit} bytes allowed")
    return bytes(body)


# -- tokens --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)  # never in a log line or a traceback's locals repr
    refresh_at: float


class TokenManager:
    """Owns the IMDSv2 token. One PUT serves every concurrent caller.

    The token is renewed once less than ``max(1 s, 10% of its TTL)`` remains (at most half the
    TTL, so a 1 s token is not renewed on every call); expiry is counted from when the PUT was
    sent, so clock skew against IMDS only ever makes us renew early.
    """

    def __init__(
        self,
        transport: _Transport,
        endpoint: str,
        *,
        ttl: int,
        v1_refusal: str | None,
        stats: Counter[str],
        retry_after: float = 5.0,
        timeout: float = 5.0,
    ) -> None:
        self._transport = transport
        self._timeout = timeout
        self._url = f"{endpoint}/latest/api/token"
        self._ttl = ttl
        self._v1_refusal = v1_refusal  # None: falling back to IMDSv1 is allowed
        self._stats = stats
        self._retry_after = retry_after
        self._token: _Token | None = None
        self._v1 = False
        self._failed: tuple[float, str] | None = None  # (until when, why): the last TokenError
        self._flight: SingleFlight[str, str | None] = SingleFlight()

    async def get(self) -> str | None:
        """A valid token, or None when IMDSv2 is unavailable and the IMDSv1 fallback is on.

        A TokenError is remembered for ``retry_after`` seconds and raised again at once:
        without that, every read would wait out another unanswered PUT.
        """
        if self._v1:
            return None
        token = self._token
        if token is not None and trio.current_time() < token.refresh_at:
            return token.value
        if self._failed is not None and trio.current_time() < self._failed[0]:
            self._stats["token_failures_remembered"] += 1
            raise TokenError(self._failed[1])  # a new exception: no traceback chain builds up
        return await self._flight.run("token", self._renew_or_remember)

    async def _renew_or_remember(self) -> str | None:
        """One token request for every waiter, in a task of its own (see `SingleFlight`):
        bounded by a deadline of its own, and a failure remembered even if every waiter has
        given up on it by then."""
        try:
            with trio.move_on_after(self._timeout):
                token = await self._renew()
                self._failed = None
                return token
            raise TokenError(f"the IMDSv2 token request got no answer within {self._timeout} s")
        except (TokenError, ResponseTooLarge) as exc:
            error = (
                exc
                if isinstance(exc, TokenError)
                else TokenError(f"IMDS answered the token request with an unusable token: {exc}")
            )
            self._failed = (trio.current_time() + self._retry_after, str(error))
            raise error from None

    def invalidate(self, token: str | None) -> None:
        """Forget ``token`` after IMDS answered 401 to it; a newer token is kept.

        ``None`` (a tokenless IMDSv1 request got 401) ends the IMDSv1 fallback: IMDSv2 is
        required now, so the next ``get()`` asks for a token again.
        """
        if token is None:
            self._v1 = False
        elif self._token is not None and self._token.value == token:
            self._token = None

    async def _renew(self) -> str | None:
        try:
            sent_at, reply = await self._put()
        except TokenError:  # unanswered: the hop limit, or one stalled request; a retry tells
            self._stats["retries"] += 1
            sent_at, reply = await self._put()
        if reply.status == 200:
            token = self._issued(reply, sent_at)
            self._token = token
            return token.value
        if reply.status in (403, 404, 405):  # what the AWS SDKs read as "no IMDSv2 here"
            self._fall_back_to_v1(reply.status)
            return None
        raise _token_status_error(reply.status)

    async def _put(self) -> tuple[float, _Reply]:
        """One token request, and when it was sent (expiry counts from then)."""
        sent_at = trio.current_time()
        self._stats["token_puts"] += 1
        reply = await self._transport.request(
            "PUT",
            self._url,
            {TOKEN_TTL_HEADER: str(self._ttl)},
            token_request=True,
            max_body=_MAX_TOKEN_BODY,
        )
        return sent_at, reply

    def _issued(self, reply: _Reply, sent_at: float) -> _Token:
        value = reply.body.decode("latin-1")
        if not _TOKEN_CHARS.fullmatch(value):  # it goes into a header verbatim
            raise TokenError("IMDS answered the token request with an unusable token")
        ttl = self._granted_ttl(reply.headers.get(TOKEN_TTL_HEADER))
        margin = min(max(1.0, ttl / 10), ttl / 2)
        log.debug("IMDSv2 token obtained, valid for %d s", ttl)
        return _Token(value, refresh_at=sent_at + ttl - margin)

    def _granted_ttl(self, header: str | None) -> int:
        """The TTL IMDS granted; the one asked for when IMDS does not say (some emulators)."""
        if header is None:
            return self._ttl
        if not _SMALL_NUMBER.fullmatch(header.strip()) or int(header) < 1:
            raise TokenError(f"IMDS granted the token an unusable TTL ({header[:20]!r})")
        return min(self._ttl, int(header))

    def _fall_back_to_v1(self, status: int) -> None:
        if self._v1_refusal is not None:
            raise TokenError(
                f"IMDSv2 is unavailable (the token request got HTTP {status}) "
                f"and {self._v1_refusal}"
            )
        log.warning("IMDSv2 unavailable (token request got HTTP %d); using IMDSv1", status)
        self._v1 = True


def _token_status_error(status: int) -> ImdsError:
    if status == 400:
        return TokenError("IMDS rejected the token request as malformed (HTTP 400)")
    if status in (429, 503):
        return Throttled(f"token request throttled (HTTP {status})")
    return Unavailable(f"token request failed (HTTP {status})")


# -- the client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImdsResponse:
    """One successful read: the exact bytes IMDS sent for ``path``."""

    path: str  # relative to /latest/, as requested: "meta-data/placement/", "user-data"
    body: bytes
    fetched_at: float  # trio.current_time() when received
    last_modified: float | None  # epoch seconds from Last-Modified; None if absent or bad


_RETRYABLE = frozenset({429, 500, 502, 503, 504})
_ERROR_KEYS: dict[type[ImdsError], str] = {
    NotFound: "errors.not_found",
    Forbidden: "errors.forbidden",
    Throttled: "errors.throttled",
    Unavailable: "errors.unavailable",
    DeadlineExceeded: "errors.deadline_exceeded",
    TokenError: "errors.token",
    ResponseTooLarge: "errors.response_too_large",
    ConfigError: "errors.config",
}
_STAT_KEYS = ("calls", "requests", "token_puts", "retries", "in_flight", "max_in_flight")


class ImdsClient:
    """Reads IMDS paths relative to ``/latest/``; see ``get`` for what each outcome raises."""

    def __init__(
        self,
        config: ClientConfig = ClientConfig(),
        *,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,  # a snapshot instead of the network
    ) -> None:
        environ = os.environ if environ is None else environ
        self.config = config
        self.endpoint = resolve_endpoint(config, environ)
        self._stats: Counter[str] = Counter()
        self._transport = _Transport(config, self._stats, transport)
        self.tokens = TokenManager(
            self._transport,
            self.endpoint,
            ttl=config.token_ttl,
            v1_refusal=_v1_refusal(config, environ),
            stats=self._stats,
            retry_after=config.token_retry_after,
            timeout=config.timeout,
        )
        self._random = random.Random()

    async def get(self, path: str) -> ImdsResponse:
        """GET ``/latest/{path}``.

        200 → the response (but 200 with an HTML page → Unavailable, at once: not IMDS).
        404 → NotFound, at once. 401 → a fresh token and one more try,
        then Forbidden. 403 → Forbidden. 429/503 → retried (honouring Retry-After), then
        Throttled. Other 5xx and connection failures → retried, then Unavailable. All of it
        within the caller's deadline; with none in effect, within ``config.timeout`` → else
        DeadlineExceeded.
        """
        self._stats["calls"] += 1
        try:
            check_path(path)
            if trio.current_effective_deadline() != math.inf:
                return await self._get_with_retries(path)  # the caller's deadline rules
            with trio.move_on_after(self.config.timeout):
                return await self._get_with_retries(path)
            raise DeadlineExceeded(f"{loggable(path)}: no answer within {self.config.timeout} s")
        except ImdsError as exc:
            self._stats[_ERROR_KEYS.get(type(exc), "errors.other")] += 1
            raise

    async def _get_with_retries(self, path: str) -> ImdsResponse:
        url = f"{self.endpoint}/latest/{path}"
        deadline = trio.current_effective_deadline()
        attempt = 0
        reauthorized = False
        while True:
            retry_after: float | None = None
            token = None
            try:
                token = await self.tokens.get()
                headers = {TOKEN_HEADER: token} if token is not None else {}
                reply = await self._transport.request("GET", url, headers)
            except (Unavailable, Throttled) as exc:  # transient, whether on the PUT or the GET
                error: ImdsError = exc
            else:
                if reply.status == 200:
                    if _is_html(reply.headers):  # IMDS sends HTML only with a 404
                        raise Unavailable(
                            f"{loggable(path)}: HTTP 200 with an HTML page, not metadata"
                        )
                    return _response(path, reply)
                if reply.status == 401 and not reauthorized:
                    reauthorized = True  # the token expired or was revoked: one fresh try
                    self.tokens.invalidate(token)
                    self._stats["retries"] += 1
                    continue
                error = _status_error(path, reply.status)
                if reply.status not in _RETRYABLE:
                    raise error
                retry_after = _retry_after(reply.headers)
            attempt += 1
            delay = max(self._backoff(attempt), retry_after or 0.0)
            if attempt >= self.config.max_attempts or trio.current_time() + delay >= deadline:
                raise error  # the real cause says more than a deadline would
            self._stats["retries"] += 1
            log.debug("%s: %s; retry %d in %.3f s", loggable(path), error, attempt, delay)
            await trio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, so concurrent retries spread out."""
        cap = min(self.config.backoff_max, self.config.backoff_base * 2 ** (attempt - 1))
        return self._random.uniform(0, cap)

    def statistics(self) -> dict[str, int]:
        """Counters: calls, requests, token_puts, retries, in_flight, max_in_flight, errors.*"""
        keys = (*_STAT_KEYS, *_ERROR_KEYS.values())
        return {**dict.fromkeys(keys, 0), **self._stats}

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


def _shown(url: str) -> str:
    """*url* as a log line or an error message may show it (see `loggable`)."""
    base, separator, path = url.partition("/latest/")
    return f"{base}{separator}{loggable(path)}" if separator else url[:300]


def _is_html(headers: httpx.Headers) -> bool:
    """A 200 in HTML or XHTML comes from something in the way (a proxy, a captive portal),
    never from IMDS, whose values are text/plain or application/octet-stream (it sends XHTML
    only with a 404): its bytes are not a value."""
    content_type: str = headers.get("Content-Type", "")
    media_type = content_type.split(";")[0].strip().lower()
    return media_type in ("text/html", "application/xhtml+xml") or media_type.endswith("+html")


def _response(path: str, reply: _Reply) -> ImdsResponse:
    return ImdsResponse(
        path=path,
        body=reply.body,
        fetched_at=reply.received_at,
        last_modified=_http_date(reply.headers.get("Last-Modified")),
    )


def _status_error(path: str, status: int) -> ImdsError:
    path = loggable(path)
    if status == 404:
        return NotFound(path)
    if status == 401:
        return Forbidden(f"{path}: HTTP 401 even with a fresh IMDSv2 token")
    if status == 403:
        return Forbidden(f"{path}: HTTP 403 (IMDS disabled, or the request was refused)")
    if status in (429, 503):
        return Throttled(f"{path}: throttled (HTTP {status})")
    return Unavailable(f"{path}: HTTP {status}")


def _retry_after(headers: httpx.Headers) -> float | None:
    """Retry-After in seconds; the HTTP-date form is ignored (IMDS sends seconds if anything)."""
    try:
        seconds = float(headers.get("Retry-After", ""))
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322, not local time
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()
