"""Amazon EC2's Instance Metadata Service (IMDS), IMDSv2 by default.

- Where: ``http://169.254.169.254`` or, with ``--endpoint-mode IPv6``, ``http://[fd00:ec2::254]``;
  the AWS SDKs' variables ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` and ``..._ENDPOINT_MODE`` are
  honoured, and ``AWS_EC2_METADATA_DISABLED=true`` refuses to touch IMDS at all.
- How: `TokenManager` owns the IMDSv2 token (one PUT for every concurrent caller, renewed a
  little before it expires, dropped on 401). IMDSv1 (no token) only on request, and never
  with ``AWS_EC2_METADATA_V1_DISABLED=true``.
- Layout: the mount root is ``/latest/meta-data/``, with ``dynamic/`` and ``user-data``
  (which live beside it) added; ``public-keys/`` lists ``0=my-key``, which is the directory
  ``0`` plus a symlink ``my-key -> 0`` for humans.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import trio

from .._errors import ConfigError, ImdsError, ResponseTooLarge, Throttled, TokenError, Unavailable
from .._flight import SingleFlight
from .._paths import SecretRules
from .._provider import (
    Authenticator,
    Credential,
    ListingEntry,
    NodeKind,
    Provider,
    check_endpoint,
)
from .._settings import ClientConfig
from .._transport import SMALL_NUMBER, Reply, Transport
from .._ttl import rules

__all__ = ["Ec2Layout", "Ec2Provider", "TokenManager", "resolve_endpoint"]

log = logging.getLogger(__name__)

ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
ENDPOINT_MODE_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"
V1_DISABLED_ENV = "AWS_EC2_METADATA_V1_DISABLED"
DISABLED_ENV = "AWS_EC2_METADATA_DISABLED"
ENDPOINTS = {"ipv4": "http://169.254.169.254", "ipv6": "http://[fd00:ec2::254]"}

TOKEN_PATH = "/latest/api/token"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]{1,1024}")  # real tokens have 56
_MAX_TOKEN_BODY = 4096
_PUBLIC_KEY_ENTRY = re.compile(r"(\d+)=(.+)")

_NO_TOKEN_ANSWER = (
    "the IMDSv2 token request (PUT /latest/api/token) got no answer. The usual cause is the "
    "hop limit: from a container the answer needs one more hop, so set "
    "HttpPutResponseHopLimit >= 2 (aws ec2 modify-instance-metadata-options "
    "--instance-id <id> --http-put-response-hop-limit 2). Otherwise this host is not on EC2 "
    "or the endpoint is wrong."
)

_HOUR = 3600.0
_LONG = 6 * _HOUR  # fixed for the life of the instance
_MINUTES = 60.0  # changes through the EC2 API while the instance runs
_SECONDS = 5.0  # changes on its own, and someone may be waiting for it (spot, credentials)


# -- configuration ---------------------------------------------------------------------------


def resolve_endpoint(config: ClientConfig, environ: Mapping[str, str]) -> str:
    """The base URL: the flag, else ``AWS_EC2_METADATA_SERVICE_ENDPOINT``, else by mode."""
    if config.endpoint is not None:
        return check_endpoint(config.endpoint)
    if environ.get(ENDPOINT_ENV):  # an empty variable counts as unset, as in the AWS SDKs
        return check_endpoint(environ[ENDPOINT_ENV])
    mode = config.endpoint_mode or environ.get(ENDPOINT_MODE_ENV) or "IPv4"
    try:
        return ENDPOINTS[mode.lower()]
    except KeyError:
        raise ConfigError(f"endpoint mode must be IPv4 or IPv6, not {mode!r}") from None


def _v1_refusal(config: ClientConfig, environ: Mapping[str, str]) -> str | None:
    """Why the IMDSv1 fallback is off, or None when it is on."""
    if not config.allow_imdsv1:
        return "the IMDSv1 fallback is not enabled (allow_imdsv1)"
    if environ.get(V1_DISABLED_ENV, "").strip().lower() == "true":
        return f"{V1_DISABLED_ENV}=true forbids the IMDSv1 fallback"
    return None


# -- the provider ----------------------------------------------------------------------------


class Ec2Layout(Provider):
    """The EC2 tree as a mount shows it, whoever serves it (EC2; OpenStack's Nova serves the
    same tree): the categories of ``/latest/meta-data/`` at the root, ``public-keys``' quirk,
    which files are secret and how long each kind of value stays true. Where the service is
    and how to be let in are the subclass's."""

    # Files holding credentials, user-supplied secrets, or proofs of the instance's identity
    # (Vault's EC2 auth method accepts the signed documents). The document itself is not one.
    secrets = SecretRules(
        (
            "iam/security-credentials/**",
            "identity-credentials/*/security-credentials/**",
            "user-data",
            "dynamic/instance-identity/pkcs7",
            "dynamic/instance-identity/signature",
            "dynamic/instance-identity/rsa2048",
        )
    )
    # First match wins. Listings first: their entries appear and disappear (spot notices,
    # tags, credentials, network interfaces) even where the leaves below them are stable.
    ttl_rules = (
        *rules(_SECONDS, "**/"),
        *rules(
            _LONG,
            "instance-id",
            "ami-id",
            "ami-launch-index",
            "ami-manifest-path",
            "ancestor-ami-ids",
            "instance-type",
            "instance-life-cycle",
            "kernel-id",
            "ramdisk-id",
            "product-codes",
            "reservation-id",
            "mac",
            "placement/**",
            "services/**",
            "dynamic/instance-identity/**",
        ),
        *rules(_MINUTES, "network/**", "tags/**"),
        *rules(
            _SECONDS,
            "iam/**",
            "identity-credentials/**",
            "spot/**",
            "events/**",
            "autoscaling/**",
        ),
    )
    root_extras = (
        ListingEntry("dynamic", NodeKind.DIRECTORY, "dynamic/"),
        ListingEntry("user-data", NodeKind.FILE, "user-data"),
    )

    def url(self, path: str) -> str:
        """``placement/region`` → ``/latest/meta-data/placement/region``; ``dynamic/...`` and
        ``user-data`` live beside ``meta-data/``."""
        if path == "user-data" or path.startswith("dynamic/"):
            return f"{self.endpoint}/latest/{path}"
        return f"{self.endpoint}/latest/meta-data/{path}"

    def entries_for(self, name: str, is_dir: bool, directory: str) -> Iterator[ListingEntry]:
        key = _PUBLIC_KEY_ENTRY.fullmatch(name) if directory == "public-keys/" else None
        if key is None:
            yield from super().entries_for(name, is_dir, directory)
            return
        index, key_name = key.groups()
        yield ListingEntry(index, NodeKind.DIRECTORY, f"{directory}{index}/", listed=name)
        if key_name != index and self.problem_with(index, directory) is None:
            yield ListingEntry(key_name, NodeKind.SYMLINK, f"{directory}{key_name}", target=index)


class Ec2Provider(Ec2Layout):
    name = "ec2"

    def __init__(self, config: ClientConfig, environ: Mapping[str, str]) -> None:
        super().__init__(config, environ)
        self._v1_refusal = _v1_refusal(config, environ)

    @classmethod
    def resolve_endpoint(cls, config: ClientConfig, environ: Mapping[str, str]) -> str:
        return resolve_endpoint(config, environ)

    @classmethod
    def refusal(cls, environ: Mapping[str, str]) -> str | None:
        """The AWS SDKs' convention: the host's owner turned IMDS access off here."""
        if environ.get(DISABLED_ENV, "").strip().lower() == "true":
            return f"{DISABLED_ENV}=true: IMDS access is turned off here"
        return None

    def authenticator(self, transport: Transport) -> TokenManager:
        return TokenManager(
            transport,
            f"{self.endpoint}{TOKEN_PATH}",
            ttl=self.config.token_ttl,
            v1_refusal=self._v1_refusal,
            retry_after=self.config.token_retry_after,
            timeout=self.config.timeout,
        )


# -- the IMDSv2 token ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)  # never in a log line or a traceback's locals repr
    refresh_at: float


@dataclass
class _TokenStatistics:
    token_puts: int = 0
    retries: int = 0
    token_failures_remembered: int = 0


class TokenManager(Authenticator):
    """Owns the IMDSv2 token. One PUT serves every concurrent caller.

    The token is renewed once less than ``max(1 s, 10% of its TTL)`` remains (at most half the
    TTL, so a 1 s token is not renewed on every call); expiry is counted from when the PUT was
    sent, so clock skew against IMDS only ever makes us renew early. A PUT unanswered twice
    (the hop limit) is a TokenError, remembered for *retry_after* seconds so reads fail fast
    rather than each wait for another PUT.
    """

    def __init__(
        self,
        transport: Transport,
        url: str,
        *,
        ttl: int,
        v1_refusal: str | None,
        retry_after: float = 5.0,
        timeout: float = 5.0,
    ) -> None:
        self._transport = transport
        self._url = url
        self._ttl = ttl
        self._v1_refusal = v1_refusal  # None: falling back to IMDSv1 is allowed
        self._retry_after = retry_after
        self._timeout = timeout
        self._token: _Token | None = None
        self._v1 = False
        self._failed: tuple[float, str] | None = None  # (until when, why): the last TokenError
        self._flight: SingleFlight[str, str | None] = SingleFlight()
        self._stats = _TokenStatistics()

    async def credential(self) -> Credential:
        token = await self.get()
        return Credential({TOKEN_HEADER: token} if token is not None else {}, key=token)

    def rejected(self, credential: Credential) -> None:
        self.invalidate(credential.key if isinstance(credential.key, str) else None)

    def statistics(self) -> dict[str, int]:
        return {"token_puts": self._stats.token_puts, "retries": self._stats.retries}

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
            self._stats.token_failures_remembered += 1
            raise TokenError(self._failed[1])  # a new exception: no traceback chain builds up
        return await self._flight.run("token", self._renew_or_remember)

    def invalidate(self, token: str | None) -> None:
        """Forget ``token`` after IMDS answered 401 to it; a newer token is kept.

        ``None`` (a tokenless IMDSv1 request got 401) ends the IMDSv1 fallback: IMDSv2 is
        required now, so the next ``get()`` asks for a token again.
        """
        if token is None:
            self._v1 = False
        elif self._token is not None and self._token.value == token:
            self._token = None

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

    async def _renew(self) -> str | None:
        try:
            sent_at, reply = await self._put()
        except TokenError:  # unanswered: the hop limit, or one stalled request; a retry tells
            self._stats.retries += 1
            try:
                sent_at, reply = await self._put()
            except TokenError as exc:
                raise TokenError(_NO_TOKEN_ANSWER) from exc
        if reply.status == 200:
            token = self._issued(reply, sent_at)
            self._token = token
            return token.value
        if reply.status in (403, 404, 405):  # what the AWS SDKs read as "no IMDSv2 here"
            self._fall_back_to_v1(reply.status)
            return None
        raise _token_status_error(reply.status)

    async def _put(self) -> tuple[float, Reply]:
        """One token request, and when it was sent (expiry counts from then)."""
        sent_at = trio.current_time()
        self._stats.token_puts += 1
        reply = await self._transport.request(
            "PUT",
            self._url,
            {TOKEN_TTL_HEADER: str(self._ttl)},
            label=f"PUT {self._url}",
            credential_request=True,
            max_body=_MAX_TOKEN_BODY,
        )
        return sent_at, reply

    def _issued(self, reply: Reply, sent_at: float) -> _Token:
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
        if not SMALL_NUMBER.fullmatch(header.strip()) or int(header) < 1:
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
