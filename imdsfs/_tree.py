"""The metadata tree: filesystem paths and inodes on one side, IMDS paths on the other.

The tree decides what is a directory, a file or a symlink from the listings IMDS serves (a
trailing ``/``, the ``public-keys`` ``N=name`` quirk), never from a list of known paths, so new
categories appear without a release. It also refuses names that cannot be filenames.

Every node keeps its inode for the life of the mount: the IMDS tree is a few hundred paths, so
numbers are never reused and ``forget`` has nothing to free.

IMDS paths here are relative to ``/latest/``: a directory's ends in ``/``
(``meta-data/placement/``), a file's does not (``meta-data/placement/region``).
"""

from __future__ import annotations

import enum
import fnmatch
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import trio

from ._cache import CachedValue, MetadataCache
from ._client import has_unfetchable_chars
from ._errors import ImdsError, NotFound

__all__ = [
    "ListingEntry",
    "MetadataTree",
    "Node",
    "NodeKind",
    "NodeStat",
    "is_secret",
    "parse_listing",
]

log = logging.getLogger(__name__)

ROOT_INODE = 1
# Real trees hold a few hundred paths (a few thousand with 50 network interfaces). Past this
# many, new names are not shown: an IMDS inventing names must not grow the daemon without end.
MAX_NODES = 20_000
# Requests the read-ahead may have in flight: fewer than the client's cap (8), so a reader's
# own request never queues behind more than a few of them.
READ_AHEAD_REQUESTS = 4
_MAX_NAME_BYTES = 255
_PUBLIC_KEYS = "meta-data/public-keys/"
_PUBLIC_KEY_ENTRY = re.compile(r"(\d+)=(.+)")

# Mount paths (see `mount_path`) whose files hold credentials or user-supplied secrets.
SECRET_PATTERNS = (
    "iam/security-credentials/*",
    "identity-credentials/*/security-credentials/*",
    "identity-credentials/**/security-credentials/*",
    "user-data",
)


class NodeKind(enum.Enum):
    DIRECTORY = "directory"
    FILE = "file"
    SYMLINK = "symlink"


@dataclass(frozen=True)
class ListingEntry:
    """One usable entry of a listing, already checked to be a safe filename."""

    name: str
    kind: NodeKind
    imds_path: str
    target: str | None = None  # for symlinks: the sibling they point to
    listed: str | None = None  # the listing's own name where it differs (``0=my-key``)


@dataclass(frozen=True)
class Node:
    inode: int
    parent: int
    name: str
    kind: NodeKind
    imds_path: str
    target: str | None = None

    @property
    def mount_path(self) -> str:
        """The path as the user sees it under the mountpoint, without a leading ``/``."""
        return mount_path(self.imds_path)

    @property
    def secret(self) -> bool:
        return self.kind is NodeKind.FILE and is_secret(self.imds_path)


@dataclass(frozen=True)
class NodeStat:
    """A node with what is known of its value: the listing for a directory, the bytes for a
    file, ``None`` for a symlink or when the fetch failed (size unknown)."""

    node: Node
    value: CachedValue | None


def is_secret(imds_path: str) -> bool:
    """Whether the file at *imds_path* holds credentials or user data (`SECRET_PATTERNS`)."""
    path = mount_path(imds_path)
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in SECRET_PATTERNS)


def mount_path(imds_path: str) -> str:
    """``meta-data/placement/region`` → ``placement/region``; ``dynamic/...`` stays as is."""
    path = imds_path.removeprefix("meta-data/")
    return path.rstrip("/")


def parse_listing(body: bytes, parent: str) -> list[ListingEntry]:
    """Parse an IMDS listing of the directory at IMDS path *parent*.

    Lines are LF-separated; a trailing ``/`` marks a directory; under ``public-keys/`` an entry
    ``N=name`` is the directory ``N`` plus a symlink ``name -> N`` for humans. Unusable names are
    skipped with a warning; the first of two entries with one name wins.
    """
    entries: dict[str, ListingEntry] = {}
    lines = body.split(b"\n") if body else []
    if lines and not lines[-1]:  # a final newline ends the last line; it is not an entry
        lines.pop()
    for line in lines:
        for entry in _entries_for_line(line, parent):
            if entry.name in entries:
                _warn_once(parent, entry.name, "duplicate name in listing")
                continue
            entries[entry.name] = entry
    return list(entries.values())


def _entries_for_line(line: bytes, parent: str) -> Iterator[ListingEntry]:
    if line.endswith(b"\r"):  # tolerate CRLF listings; IMDS itself sends LF only
        line = line[:-1]
    if not line:
        _warn_once(parent, "", "empty line")
        return
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        _warn_once(parent, repr(line), "name is not UTF-8")
        return
    is_dir = text.endswith("/")
    name = text[:-1] if is_dir else text
    key = _PUBLIC_KEY_ENTRY.fullmatch(name) if parent == _PUBLIC_KEYS else None
    if key is not None:
        index, key_name = key.groups()
        yield ListingEntry(index, NodeKind.DIRECTORY, f"{parent}{index}/", listed=name)
        if _usable_name(parent, key_name) and key_name != index:
            yield ListingEntry(key_name, NodeKind.SYMLINK, f"{parent}{key_name}", target=index)
        return
    if not _usable_name(parent, name):
        return
    if is_dir:
        yield ListingEntry(name, NodeKind.DIRECTORY, f"{parent}{name}/")
    else:
        yield ListingEntry(name, NodeKind.FILE, f"{parent}{name}")


def _usable_name(parent: str, name: str) -> bool:
    if name in ("", ".", ".."):
        reason = "reserved or empty name"
    elif "/" in name or "\0" in name:
        reason = "name contains '/' or NUL"
    elif has_unfetchable_chars(name):  # it could be listed, but every read of it would fail
        reason = "name contains a control character or one of ?#%\\, so cannot be fetched"
    elif len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        reason = f"name longer than {_MAX_NAME_BYTES} bytes"
    else:
        return True
    _warn_once(parent, name, reason)
    return False


_warned: set[tuple[str, str]] = set()
_MAX_WARNED = 1000  # an IMDS inventing bad names must not grow this set without end


def _warn_once(parent: str, name: str, reason: str) -> None:
    if (parent, name) in _warned or len(_warned) > _MAX_WARNED:
        return
    _warned.add((parent, name))
    if len(_warned) > _MAX_WARNED:
        log.warning("more than %d unusable names skipped; no longer logging each", _MAX_WARNED)
    else:
        log.warning("skipping entry %r in /latest/%s: %s", name[:300], parent, reason)


@dataclass
class MetadataTree:
    """The inode table and the directory structure, read through a `MetadataCache`."""

    cache: MetadataCache
    max_nodes: int = MAX_NODES
    _nodes: dict[int, Node] = field(default_factory=dict)
    _by_key: dict[tuple[int, str, NodeKind], int] = field(default_factory=dict)
    # directory inode → (the listing body parsed, its entries): lookups reuse the parse
    _parsed: dict[int, tuple[bytes, list[ListingEntry]]] = field(default_factory=dict)
    _read_ahead: trio.Nursery | None = None  # see `read_ahead_in`
    _warming: set[int] = field(default_factory=set)  # directories being read ahead now
    _full: bool = False  # max_nodes reached (logged once)
    _read_ahead_slots: trio.CapacityLimiter = field(
        default_factory=lambda: trio.CapacityLimiter(READ_AHEAD_REQUESTS)
    )

    def __post_init__(self) -> None:
        root = Node(ROOT_INODE, ROOT_INODE, "", NodeKind.DIRECTORY, "meta-data/")
        self._nodes[ROOT_INODE] = root

    @property
    def root(self) -> Node:
        return self._nodes[ROOT_INODE]

    def node(self, inode: int) -> Node:
        """The node with this inode; `NotFound` if the kernel names one we never issued."""
        try:
            return self._nodes[inode]
        except KeyError:
            raise NotFound(f"no inode {inode}") from None

    async def children(self, directory: Node) -> list[Node]:
        """The current entries of *directory*, from its (cached) listing."""
        body = (await self.cache.get(directory.imds_path)).body
        parsed = self._parsed.get(directory.inode)
        if parsed is None or parsed[0] is not body:  # same bytes object: same listing
            parsed = (body, parse_listing(body, directory.imds_path))
            self._parsed[directory.inode] = parsed
        entries = parsed[1]
        if directory.inode == ROOT_INODE:
            entries = [*entries, *await self._root_extras()]  # never extend the memo
        nodes = (self._register(directory, entry) for entry in entries)
        return [node for node in nodes if node is not None]

    async def child(self, directory: Node, name: str) -> Node:
        for node in await self.children(directory):
            if node.name == name:
                return node
        raise NotFound(f"{directory.mount_path}/{name}")

    async def stat(self, node: Node) -> NodeStat:
        """The node with its current value. A file's value is fetched (raising if it is gone or
        failing); a directory reports its listing only if cached, since its size is not its
        listing's and fetching it would cost a request per subdirectory."""
        if node.kind is NodeKind.FILE:
            return NodeStat(node, await self.cache.get(node.imds_path))
        if node.kind is NodeKind.DIRECTORY:
            return NodeStat(node, self.cache.peek(node.imds_path))
        return NodeStat(node, None)

    async def stat_children(self, directory: Node, deadline: float) -> list[NodeStat]:
        """Every child with its value, fetched concurrently so ``ls -l`` costs one round.

        A file that answers 404 is left out (listed but gone); one that fails or misses
        *deadline* (seconds) is kept with an unknown size rather than failing the listing.
        """
        children = await self.children(directory)
        stats: dict[int, NodeStat] = {}
        gone: set[int] = set()
        if self._read_ahead is not None:
            for node in children:
                if self._wants_read_ahead(node):
                    self._warming.add(node.inode)  # one read-ahead per directory at a time
                    self._read_ahead.start_soon(self._warm, node)

        async def fetch(node: Node) -> None:
            try:
                stats[node.inode] = await self.stat(node)
            except NotFound:
                gone.add(node.inode)
            except ImdsError as exc:  # the cache already warned, once per failing path
                log.debug(
                    "listing /%s: size of %s unknown: %s", directory.mount_path, node.name, exc
                )

        with trio.move_on_after(deadline):
            async with trio.open_nursery() as nursery:
                for node in children:
                    nursery.start_soon(fetch, node)
        return [stats.get(n.inode, NodeStat(n, None)) for n in children if n.inode not in gone]

    def read_ahead_in(self, nursery: trio.Nursery | None) -> None:
        """From now on, `stat_children` also warms each subdirectory in *nursery* (None: stop):
        its listing and its files, one level down, at most `READ_AHEAD_REQUESTS` requests at
        a time.

        A walk (``grep -r``, ``find``, ``ls -R``) then finds each directory ready when it gets
        there, instead of paying one listing round trip and one round of files per directory
        in sequence."""
        self._read_ahead = nursery

    def _wants_read_ahead(self, node: Node) -> bool:
        """A subdirectory not being read ahead already, whose listing is not fresh in the cache:
        a fresh listing means it was read (or read ahead) lately, and warming it again would
        spawn a task per file only to hit the cache on every repeated ``ls``."""
        return (
            node.kind is NodeKind.DIRECTORY
            and node.inode not in self._warming
            and self.cache.peek(node.imds_path) is None
        )

    async def _warm(self, directory: Node) -> None:
        try:
            async with self._read_ahead_slots:
                children = await self.children(directory)
            async with trio.open_nursery() as nursery:
                for node in children:
                    if node.kind is NodeKind.FILE:
                        nursery.start_soon(self._warm_file, node)
        except ImdsError as exc:  # left for the reader who asks; the cache warned once
            log.debug("read-ahead of /%s skipped: %s", directory.mount_path, exc)
        except Exception:  # a bug here must not take the mount down with it
            log.exception("read-ahead of /%s failed unexpectedly", directory.mount_path)
        finally:
            self._warming.discard(directory.inode)

    async def _warm_file(self, node: Node) -> None:
        try:
            async with self._read_ahead_slots:
                await self.cache.get(node.imds_path)
        except ImdsError as exc:
            log.debug("read-ahead of /%s skipped: %s", node.mount_path, exc)

    async def crawl(self, directory: Node | None = None) -> int:
        """Fetch every listing and value below *directory* (default: the root), concurrently.

        This is ``--prefetch``: one bounded concurrent crawl (the client caps requests in
        flight) so the first ``grep -r`` or ``find`` finds the cache warm. Failures are left
        for the reader who asks later. Returns the number of files fetched.
        """
        fetched = 0

        async def walk(node: Node) -> None:
            nonlocal fetched
            try:
                if node.kind is NodeKind.FILE:
                    await self.cache.get(node.imds_path)
                    fetched += 1
                elif node.kind is NodeKind.DIRECTORY:
                    async with trio.open_nursery() as nursery:
                        for child in await self.children(node):
                            nursery.start_soon(walk, child)
            except ImdsError as exc:
                log.debug("prefetch of /%s skipped: %s", node.mount_path, exc)

        await walk(directory or self.root)
        return fetched

    async def _root_extras(self) -> list[ListingEntry]:
        """The mount root adds ``dynamic/`` and, when IMDS has it, ``user-data``."""
        extras = [ListingEntry("dynamic", NodeKind.DIRECTORY, "dynamic/")]
        try:
            await self.cache.get("user-data")
        except NotFound:
            return extras
        except ImdsError:
            pass  # unknown: show it; reading it reports the error
        return [*extras, ListingEntry("user-data", NodeKind.FILE, "user-data")]

    def _register(self, parent: Node, entry: ListingEntry) -> Node | None:
        """The node for *entry*, created on first sight; None once the tree is full."""
        key = (parent.inode, entry.name, entry.kind)
        inode = self._by_key.get(key)
        if inode is not None:
            return self._nodes[inode]
        if len(self._nodes) >= self.max_nodes:
            if not self._full:
                self._full = True
                log.error(
                    "IMDS listed more than %d paths; new names (first: /%s) are not shown "
                    "until the next mount",
                    self.max_nodes,
                    mount_path(entry.imds_path),
                )
            return None
        inode = len(self._nodes) + 1
        self._by_key[key] = inode
        self._nodes[inode] = Node(
            inode, parent.inode, entry.name, entry.kind, entry.imds_path, entry.target
        )
        return self._nodes[inode]

    def nodes(self) -> Iterable[Node]:
        return self._nodes.values()
