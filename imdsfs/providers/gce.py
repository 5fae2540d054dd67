"""Google Compute Engine's metadata server.

- Where: ``http://metadata.google.internal`` (the mount adds ``/computeMetadata/v1/``), or
  ``169.254.169.254`` where that name does not resolve; ``GCE_METADATA_HOST`` (``host[:port]``,
  as google-auth and google-cloud-go read it) overrides both, ``--endpoint`` overrides all.
- How: every request carries ``Metadata-Flavor: Google``; there is no token.
- Layout: the mount root is ``/computeMetadata/v1/`` (``instance/``, ``project/``, ...);
  listings mark directories with a trailing ``/``, as on EC2, so the shared listing rules apply
  unchanged.
- Secrets: service-account tokens and identities, and every attribute (instance and project
  attributes carry user-data, startup scripts, ssh keys, sometimes credentials).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping

import trio

from .._errors import ImdsError
from .._gce_tree import NAMED_CHILDREN, children, expand, is_directory
from .._paths import SecretRules
from .._provider import (
    Authenticator,
    Bulk,
    ChangeFeed,
    ListingEntry,
    Provider,
    StaticHeaders,
    check_endpoint,
)
from .._settings import ClientConfig
from .._transport import Reply, Transport
from .._ttl import rules

__all__ = ["GceProvider", "changed_paths"]

log = logging.getLogger(__name__)

HOST_ENV = "GCE_METADATA_HOST"
DEFAULT_HOST = "metadata.google.internal"
FALLBACK_ENDPOINT = "http://169.254.169.254"
ROOT = "/computeMetadata/v1/"
FLAVOR = {"Metadata-Flavor": "Google"}

_SERVICE_ACCOUNT = re.compile(r"instance/service-accounts/[^/]+/")

_HOUR = 3600.0
_LONG = 6 * _HOUR  # fixed for the life of the instance
_MINUTES = 60.0  # changes through the Compute API while the instance runs
_SECONDS = 5.0  # changes on its own, and someone may be waiting for it
_TOKEN = 1.0


class GceProvider(Provider):
    name = "gce"
    secrets = SecretRules(
        (
            "instance/service-accounts/*/token",
            "instance/service-accounts/*/identity",
            "instance/attributes/**",
            "project/attributes/**",
        )
    )
    ttl_rules = (
        *rules(_SECONDS, "**/"),
        *rules(
            _SECONDS,
            "instance/maintenance-event",
            "instance/preempted",
            "instance/upcoming-maintenance",
            "instance/upcoming-maintenance/**",
        ),
        *rules(
            _LONG,
            "instance/id",
            "instance/name",
            "instance/hostname",
            "instance/zone",
            "instance/machine-type",
            "instance/cpu-platform",
            "instance/image",
            "project/project-id",
            "project/numeric-project-id",
            "universe/**",
        ),
        # A token's expires_in counts down each second, and a rotated token is not in the
        # change feed (tokens are minted per request): a token file is at most 1 s old.
        *rules(_TOKEN, "instance/service-accounts/*/token"),
        *rules(_MINUTES, "instance/service-accounts/**", "instance/network-interfaces/**"),
    )

    @classmethod
    def resolve_endpoint(cls, config: ClientConfig, environ: Mapping[str, str]) -> str:
        """The flag, else ``GCE_METADATA_HOST``, else the name (or its address, when the name
        does not resolve: no DNS in a container, say)."""
        if config.endpoint is not None:
            return check_endpoint(config.endpoint)
        host = environ.get(HOST_ENV, "").strip()
        if host:
            return check_endpoint(f"http://{host}")
        try:
            socket.getaddrinfo(DEFAULT_HOST, 80, proto=socket.IPPROTO_TCP)
        except OSError:
            return FALLBACK_ENDPOINT
        return f"http://{DEFAULT_HOST}"

    def url(self, path: str) -> str:
        return f"{self.endpoint}{ROOT}{path}"

    def authenticator(self, transport: Transport) -> StaticHeaders:
        return StaticHeaders(FLAVOR)

    def entries_for(self, name: str, is_dir: bool, directory: str) -> Iterator[ListingEntry]:
        """A service account's ``identity`` is not a file: it answers 400 unless asked with an
        ``audience``, which a path cannot carry. (Its access ``token`` is a file.)"""
        if name == "identity" and _SERVICE_ACCOUNT.fullmatch(directory):
            return
        yield from super().entries_for(name, is_dir, directory)

    def bulk(self, path: str) -> Bulk | None:
        """A cold directory is read with its whole subtree (``?recursive=true``), so a cold
        ``grep -r`` costs a handful of requests, not one per file."""
        if _SERVICE_ACCOUNT.fullmatch(path):
            return None  # its listing also holds token and identity, which the answer lacks
        return Bulk("recursive=true&alt=json", lambda body: expand(json.loads(body), path))

    def change_feed(self, transport: Transport, authenticator: Authenticator) -> ChangeFeed:
        return _GceChangeFeed(self.url(""), transport, authenticator)


# -- the change feed -------------------------------------------------------------------------


class _GceChangeFeed(ChangeFeed):
    """One long-poll of the whole tree (``?recursive=true&wait_for_change=true``): the server
    answers when anything in it changes, or after ``timeout_sec`` with the same ETag. Each
    answer is compared with the last one; the paths that differ are reported."""

    def __init__(self, url: str, transport: Transport, authenticator: Authenticator) -> None:
        self._url = url
        self._transport = transport
        self._authenticator = authenticator
        self.following = False  # until its first answer

    def covers(self, path: str) -> bool:
        """Tokens are minted per request: the recursive answer never holds them."""
        return not (_SERVICE_ACCOUNT.match(path) and path.endswith(("/token", "/identity")))

    async def changes(self) -> AsyncIterator[set[str]]:
        etag, previous, failures = "NONE", None, 0
        while True:
            answer = await self._answer(etag)
            self.following = answer is not None
            if answer is None:
                failures += 1
                await trio.sleep(min(_FEED_BACKOFF_MAX, _FEED_BACKOFF * 2.0 ** min(failures, 8)))
                continue
            failures = 0
            tree, etag = answer
            if previous is not None:
                changed = changed_paths(previous, tree)
                if changed:
                    yield changed
            previous = tree

    async def _answer(self, etag: str) -> tuple[object, str] | None:
        """The tree and its ETag, once it differs from *etag* (or the poll times out); None
        when the service failed, which the caller backs off from."""
        try:
            reply = await self._poll(etag)
        except ImdsError as exc:
            log.debug("the change feed failed (%s); again in a moment", exc)
            return None
        if reply.status != 200:
            log.debug("the change feed got HTTP %d; again in a moment", reply.status)
            return None
        try:
            tree = json.loads(reply.body)
        except ValueError:
            log.debug("the change feed got no JSON; again in a moment")
            return None
        return tree, reply.headers.get("ETag", "NONE")

    async def _poll(self, etag: str) -> Reply:
        credential = await self._authenticator.credential()
        query = urllib.parse.urlencode(
            {
                "recursive": "true",
                "alt": "json",
                "wait_for_change": "true",
                "last_etag": etag,
                "timeout_sec": str(_FEED_SECONDS),
            }
        )
        return await self._transport.request(
            "GET",
            f"{self._url}?{query}",
            credential.headers,
            label=f"GET {ROOT}?recursive=true&wait_for_change=true",
            read_timeout=_FEED_SECONDS + 10,
        )


_FEED_SECONDS = 60  # what the guest agent asks for
_FEED_BACKOFF = 0.5  # GCE answers 503 for under a second during maintenance
_FEED_BACKOFF_MAX = 30.0


def changed_paths(old: object, new: object) -> set[str]:
    """The mount paths that differ between two answers of ``?recursive=true``: leaves whose
    values differ, and the listings of directories that gained or lost names."""
    changed: set[str] = set()
    _diff("", old, new, "", changed, named=False)
    return changed


def _diff(key: str, old: object, new: object, path: str, out: set[str], named: bool) -> None:
    if is_directory(key, old) and is_directory(key, new):
        before = {name: (k, v) for name, k, v in children(key, old, named)}
        after = {name: (k, v) for name, k, v in children(key, new, named)}
        if before.keys() != after.keys():
            out.add(path)
        below = key in NAMED_CHILDREN
        for name in before.keys() | after.keys():
            child_key, old_child = before.get(name, (None, None))
            new_key, new_child = after.get(name, (child_key, None))
            child_path = (
                f"{path}{name}/"
                if is_directory(new_key or "", new_child)
                or is_directory(child_key or "", old_child)
                else f"{path}{name}"
            )
            _diff(new_key or child_key or "", old_child, new_child, child_path, out, below)
    elif old != new:
        out.add(path.rstrip("/"))
        if path.endswith("/"):
            out.add(path)  # a directory came or went
