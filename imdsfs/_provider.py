"""The provider seam: everything that differs between clouds, behind one interface.

A `Provider` knows one cloud's metadata service: where it is (default endpoints and the
environment variables its SDKs honour), how to ask (`Authenticator`: EC2's IMDSv2 token, a
fixed header elsewhere), how mount paths map to URLs (Azure's carry an api-version,
renegotiated when refused), how its listings read (EC2's ``public-keys`` ``N=name`` quirk),
which paths are secret, how long each kind of value stays true, how many paths one request
can read (`Bulk`), and how fast it may be asked (`RateLimit`). The client, cache, tree and
filesystem above it use only this interface, so they never know which cloud they are on; a
new cloud is a module in ``imdsfs/providers``.

Listings all share one shape (one name per line, a trailing ``/`` for a directory): the
generic parsing is here, and a provider only adds its quirks through `Provider.entries_for`.
"""

from __future__ import annotations

import abc
import enum
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import httpx

from ._errors import ConfigError
from ._paths import MAX_PATH_BYTES, SecretRules, name_problem
from ._ratelimit import RateLimit
from ._settings import ClientConfig
from ._ttl import TtlRule

if TYPE_CHECKING:
    from ._transport import Transport

__all__ = [
    "Authenticator",
    "Bulk",
    "ChangeFeed",
    "Credential",
    "Listing",
    "ListingEntry",
    "NodeKind",
    "Provider",
    "StaticHeaders",
    "check_endpoint",
]


class NodeKind(enum.Enum):
    DIRECTORY = "directory"
    FILE = "file"
    SYMLINK = "symlink"


@dataclass(frozen=True)
class ListingEntry:
    """One usable entry of a listing, already checked to be a safe filename."""

    name: str
    kind: NodeKind
    path: str  # mount path; a directory's ends in "/"
    target: str | None = None  # for symlinks: the sibling they point to
    listed: str | None = None  # the listing's own name where it differs (``0=my-key``)


@dataclass
class Listing:
    """A parsed listing: the usable entries in order, and the lines skipped with why."""

    entries: list[ListingEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)


@dataclass(frozen=True)
class Credential:
    """What a request carries to be let in; *key* tells the authenticator which one failed."""

    headers: Mapping[str, str]
    key: object = None


class Authenticator(abc.ABC):
    """Gets (and renews, and drops) what requests need to be accepted."""

    @abc.abstractmethod
    async def credential(self) -> Credential:
        """Headers for the next request; raises TokenError when none can be had."""

    def rejected(self, credential: Credential) -> None:  # noqa: B027 (most have nothing to drop)
        """The service answered 401 to a request made with *credential*."""

    def statistics(self) -> dict[str, int]:
        """Counters to show with the client's (``imdsfs stats``)."""
        return {}


class ChangeFeed(abc.ABC):
    """A service's own way to say what changed (GCE's ``wait_for_change`` long-poll), so the
    cache hears of a change when it happens instead of when a TTL runs out."""

    # Whether the service answers the feed now. While it does not, nothing reports changes:
    # a watched path is then asked for per TTL, as without a feed.
    following: bool = True

    @abc.abstractmethod
    def changes(self) -> AsyncIterator[set[str]]:
        """Sets of mount paths whose values (or listings) changed, as they happen; forever.
        A failure is retried inside, with backoff: it never ends the iteration."""

    def covers(self, path: str) -> bool:
        """Whether a change of *path* is reported here (else only its TTL tells)."""
        return True


@dataclass(frozen=True)
class Bulk:
    """A service's way to read many paths in one request: GCE's ``?recursive=true`` (a
    directory with its subtree), Azure's ``/metadata/instance`` (the whole document). The
    request is for the URL of mount path *source* (None: the directory being read) with
    *query* added; *expand* turns its answer into what each path it covers reads, by mount
    path (a ValueError if the answer cannot be read).

    Without *always*, it serves a directory's first read (a cold walk) and nothing else, and
    a path the answer lacks is asked for on its own (GCE). With *always*, it is how every
    path it covers is read, files and refreshes too, and a path its answer lacks does not
    exist (Azure: there are no listings to ask for, and 5 requests per second at most)."""

    query: str
    expand: Callable[[bytes], dict[str, bytes]]
    source: str | None = None
    always: bool = False


class StaticHeaders(Authenticator):
    """The same headers on every request (GCE's ``Metadata-Flavor: Google``, Azure's ...)."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._credential = Credential(dict(headers))

    async def credential(self) -> Credential:
        return self._credential


class Provider(abc.ABC):
    """One cloud's metadata service; see the module docstring."""

    name: ClassVar[str]
    secrets: ClassVar[SecretRules]
    ttl_rules: ClassVar[Sequence[TtlRule]]
    # Entries the mount root shows besides its listing, when they exist (EC2's dynamic/ and
    # user-data, which live beside meta-data/ rather than in it).
    root_extras: ClassVar[Sequence[ListingEntry]] = ()
    # How many requests the service takes (Azure: 5 per second); the transport keeps to it.
    rate_limit: ClassVar[RateLimit | None] = None

    def __init__(self, config: ClientConfig, environ: Mapping[str, str]) -> None:
        self.config = config
        # The base URL, from the flag, else the environment the cloud's SDKs read, else the
        # well-known address.
        self.endpoint = self.resolve_endpoint(config, environ)
        self.detected: str | None = None  # why --provider auto chose this one
        self._where: dict[str, str] = {}  # asked for every request's label

    @classmethod
    @abc.abstractmethod
    def resolve_endpoint(cls, config: ClientConfig, environ: Mapping[str, str]) -> str:
        """The base URL to use; ConfigError if the one given is unusable."""

    @classmethod
    def refusal(cls, environ: Mapping[str, str]) -> str | None:
        """Why this environment forbids asking the service at all (EC2's
        ``AWS_EC2_METADATA_DISABLED=true``), or None."""
        return None

    @abc.abstractmethod
    def url(self, path: str) -> str:
        """The URL that answers mount path *path* (a listing ends in ``/``; the root's is
        ``""``)."""

    def bulk(self, path: str) -> Bulk | None:
        """How to read *path* together with others in one request, if the service can (EC2
        cannot: one request per listing and value)."""
        return None

    def known(self, path: str) -> bytes | None:
        """The value of *path* the mount has without asking, if any: a listing of the
        provider's own making that must not depend on an answer (Azure's root lists
        categories with URLs of their own: a broken instance document must not hide
        scheduled events)."""
        return None

    def renegotiate(self, url: str, body: bytes) -> bool:
        """The service answered 400 with *body* to a request for *url*: whether the provider
        now asks differently, so that one more try may succeed (Azure: an api-version the
        service does not have, replaced by one it names). Most services' 400 is final."""
        return False

    def change_feed(self, transport: Transport, authenticator: Authenticator) -> ChangeFeed | None:
        """The service's change feed, if it has one (EC2 has none: TTLs alone)."""
        return None

    def where(self, path: str) -> str:
        """Mount path *path* as a log line shows it: the path of its URL on the service
        (``/latest/meta-data/...``), with the names below a secret directory left out."""
        where = self._where.get(path)
        if where is None:
            if len(self._where) > 50_000:  # a tree holds at most 20 000 paths
                self._where.clear()
            shown = self.secrets.loggable(path)
            where = urllib.parse.urlsplit(self.url(shown.removesuffix("…"))).path
            where = self._where[path] = where + "…" if shown.endswith("…") else where
        return where

    @abc.abstractmethod
    def authenticator(self, transport: Transport) -> Authenticator:
        """What gets requests accepted; it may send requests of its own through *transport*."""

    def parse_listing(self, body: bytes, directory: str, limit: int) -> Listing:
        """Parse the listing of mount path *directory*: LF-separated names, a trailing ``/``
        for a directory. Unusable names are skipped (with why); the first of two entries
        with one name wins; at most *limit* entries are kept."""
        listing = Listing()
        seen: set[str] = set()
        lines = body.split(b"\n", limit + 1) if body else []
        if lines and not lines[-1]:  # a final newline ends the last line; it is not an entry
            lines.pop()
        for line in lines[:limit]:
            for entry in self._entries_for_line(line, directory, listing.skipped):
                if entry.name in seen:
                    listing.skipped.append((entry.name, "duplicate name in listing"))
                    continue
                seen.add(entry.name)
                listing.entries.append(entry)
        del listing.entries[limit:]
        return listing

    def _entries_for_line(
        self, line: bytes, directory: str, skipped: list[tuple[str, str]]
    ) -> Iterator[ListingEntry]:
        if line.endswith(b"\r"):  # tolerate CRLF listings; the services send LF only
            line = line[:-1]
        if not line:
            skipped.append(("", "empty line"))
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            skipped.append((repr(line), "name is not UTF-8"))
            return
        is_dir = text.endswith("/")
        name = text[:-1] if is_dir else text
        for entry in self.entries_for(name, is_dir, directory):
            problem = self.problem_with(entry.name, directory)
            if problem is None:
                yield entry
            else:
                skipped.append((entry.name, problem))

    def entries_for(self, name: str, is_dir: bool, directory: str) -> Iterator[ListingEntry]:
        """The entries one listed name stands for: itself, unless the provider has a quirk."""
        if is_dir:
            yield ListingEntry(name, NodeKind.DIRECTORY, f"{directory}{name}/")
        else:
            yield ListingEntry(name, NodeKind.FILE, f"{directory}{name}")

    @staticmethod
    def problem_with(name: str, directory: str) -> str | None:
        """Why *name* cannot be an entry of *directory*, or None."""
        problem = name_problem(name)
        if problem is None and len(directory.encode()) + len(name.encode()) + 1 > MAX_PATH_BYTES:
            problem = f"path longer than {MAX_PATH_BYTES} bytes"
        return problem


def check_endpoint(raw: str) -> str:
    """*raw* as a base URL (``http://host[:port]``), or a ConfigError saying what is wrong."""
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"bad endpoint {raw!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"bad endpoint {raw!r}: need http://host[:port]")
    if url.port is not None and not 0 < url.port < 65536:
        raise ConfigError(f"bad endpoint {raw!r}: port out of range")
    if url.query or url.fragment:
        raise ConfigError(f"bad endpoint {raw!r}: no query or fragment allowed")
    return raw.rstrip("/")
