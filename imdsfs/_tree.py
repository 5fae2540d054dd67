"""The metadata tree: filesystem paths and inodes on one side, IMDS paths on the other.

The tree decides what is a directory, a file or a symlink from the listings IMDS serves (a
trailing ``/``, the ``public-keys`` ``N=name`` quirk), never from a list of known paths, so new
categories appear without a release. It also refuses names that cannot be filenames.

Every node keeps its inode for the life of the mount: the IMDS tree is a few hundred paths, so
numbers are never reused.

**A file's inode names one value.** The kernel keeps one size and one page cache per inode,
shared by every reader and changed by any reader's lookup, getattr or readdir; a handle's
bytes are per open. Had a file one inode, a value that changes length under concurrent
readers would come back cut, padded or spliced (it did). So each value a file takes gets an
inode of its own (a `FileVersion`) whose size and bytes never change: the kernel may cache
its pages for as long as it likes, ``read``, ``sendfile`` and ``mmap`` all see one whole
value, and a newer value is a new inode the kernel finds on its next lookup (entry timeouts
end when the value's TTL does). A file whose value is not known yet (a listing whose sizes
could not all be fetched in time) is shown under the node's own inode, with no size, and is
read without the page cache. A superseded version is freed once the kernel forgets it.

IMDS paths here are relative to ``/latest/``: a directory's ends in ``/``
(``meta-data/placement/``), a file's does not (``meta-data/placement/region``).
"""

from __future__ import annotations

import enum
import itertools
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import trio

from ._cache import CachedValue, MetadataCache
from ._client import has_unfetchable_chars
from ._errors import ImdsError, NotFound
from ._flight import fallback_deadline
from ._paths import is_secret, loggable, mount_path

__all__ = [
    "FileVersion",
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
# Children whose values one readdir fetches to report their sizes; past this (no real
# directory comes close), sizes are left for ``stat`` to ask.
MAX_SIZES_PER_LISTING = 256
_MAX_NAME_BYTES = 255
# Longest IMDS path a node may have: far beyond any real tree, far below what a URL may hold.
_MAX_PATH_BYTES = 8192
_PUBLIC_KEYS = "meta-data/public-keys/"
_PUBLIC_KEY_ENTRY = re.compile(r"(\d+)=(.+)")


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
class FileVersion:
    """One value of a file, under an inode of its own (see the module docstring)."""

    inode: int
    node: Node
    body: bytes
    changed_at: float  # wall clock: the mtime


@dataclass(frozen=True)
class NodeStat:
    """A node with what is known of its value: the listing for a directory, the bytes for a
    file, ``None`` for a symlink or when the fetch failed (size unknown). A file with a value
    has the `FileVersion` holding those bytes."""

    node: Node
    value: CachedValue | None
    version: FileVersion | None = None

    @property
    def inode(self) -> int:
        """The inode the kernel is to know this entry by."""
        return self.version.inode if self.version is not None else self.node.inode


def parse_listing(body: bytes, parent: str, limit: int = MAX_NODES) -> list[ListingEntry]:
    """Parse an IMDS listing of the directory at IMDS path *parent*.

    Lines are LF-separated; a trailing ``/`` marks a directory; under ``public-keys/`` an entry
    ``N=name`` is the directory ``N`` plus a symlink ``name -> N`` for humans. Unusable names are
    skipped with a warning; the first of two entries with one name wins. At most *limit*
    entries are kept: no directory may hold more than the whole tree.
    """
    entries: dict[str, ListingEntry] = {}
    lines = body.split(b"\n", limit + 1) if body else []
    if lines and not lines[-1]:  # a final newline ends the last line; it is not an entry
        lines.pop()
    for line in lines[:limit]:
        for entry in _entries_for_line(line, parent):
            if entry.name in entries:
                _warn_once(parent, entry.name, "duplicate name in listing")
                continue
            entries[entry.name] = entry
    return list(entries.values())[:limit]


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
        if not _usable_name(parent, index):
            return
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
    elif len(parent.encode("utf-8")) + len(name.encode("utf-8")) + 1 > _MAX_PATH_BYTES:
        reason = f"path longer than {_MAX_PATH_BYTES} bytes"
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
    elif is_secret(parent):  # a name under a credential directory may itself be a secret
        log.warning("skipping an entry in /latest/%s: %s", loggable(parent), reason)
    else:
        log.warning("skipping entry %r in /latest/%s: %s", name[:300], parent[:300], reason)


@dataclass
class _Listing:
    """A directory's listing as parsed from one body: nodes by name, in listing order."""

    body: bytes
    nodes: dict[str, Node]


class MetadataTree:
    """The inode table and the directory structure, read through a `MetadataCache`."""

    def __init__(self, cache: MetadataCache, *, max_nodes: int = MAX_NODES) -> None:
        self.cache = cache
        self.max_nodes = max_nodes
        self._inodes = itertools.count(ROOT_INODE + 1)  # nodes and versions: never reused
        self._nodes: dict[int, Node] = {
            ROOT_INODE: Node(ROOT_INODE, ROOT_INODE, "", NodeKind.DIRECTORY, "meta-data/")
        }
        self._by_key: dict[tuple[int, str, NodeKind], int] = {}
        self._listings: dict[int, _Listing] = {}  # directory inode → its parsed listing
        self._versions: dict[int, FileVersion] = {}  # version inode → version
        self._current: dict[int, FileVersion] = {}  # file node inode → its newest version
        self._lookups: Counter[int] = Counter()  # version inode → kernel lookup count
        self._read_ahead: trio.Nursery | None = None  # see `read_ahead_in`
        self._warming: set[int] = set()  # directories being read ahead now
        self._full = False  # max_nodes reached (logged once)
        self._read_ahead_slots = trio.CapacityLimiter(READ_AHEAD_REQUESTS)

    @property
    def root(self) -> Node:
        return self._nodes[ROOT_INODE]

    def entry(self, inode: int) -> Node | FileVersion:
        """What the kernel means by *inode*: a node, or one value of a file."""
        found = self._nodes.get(inode) or self._versions.get(inode)
        if found is None:
            raise NotFound(f"no inode {inode}")
        return found

    def node(self, inode: int) -> Node:
        """The node with this inode (a version's file); `NotFound` for one never issued."""
        found = self.entry(inode)
        return found.node if isinstance(found, FileVersion) else found

    # --- directories ----------------------------------------------------------------------

    async def children(self, directory: Node) -> list[Node]:
        """The current entries of *directory*, from its (cached) listing."""
        nodes = list((await self._listing(directory)).nodes.values())
        if directory.inode == ROOT_INODE:
            nodes += [node for node in await self._root_extras() if node not in nodes]
        return nodes

    async def child(self, directory: Node, name: str) -> Node:
        """The entry *name* of *directory*: one dictionary lookup, whatever its size."""
        node = (await self._listing(directory)).nodes.get(name)
        if node is None and directory.inode == ROOT_INODE:
            node = next((n for n in await self._root_extras() if n.name == name), None)
        if node is None:
            raise NotFound(loggable(f"{directory.imds_path}{name}"))
        return node

    async def _listing(self, directory: Node) -> _Listing:
        """The parsed listing, parsed (and its nodes registered) once per listing body."""
        body = (await self.cache.get(directory.imds_path)).body
        listing = self._listings.get(directory.inode)
        if listing is None or listing.body is not body:  # same bytes object: same listing
            entries = parse_listing(body, directory.imds_path, limit=self.max_nodes)
            nodes = (self._register(directory, entry) for entry in entries)
            listing = _Listing(body, {node.name: node for node in nodes if node is not None})
            self._listings[directory.inode] = listing
        return listing

    async def _root_extras(self) -> list[Node]:
        """The mount root adds ``dynamic/`` and, when IMDS has it, ``user-data``."""
        extras = [ListingEntry("dynamic", NodeKind.DIRECTORY, "dynamic/")]
        try:
            await self.cache.get("user-data")
        except NotFound:
            pass
        except ImdsError:  # unknown: show it; reading it reports the error
            extras.append(ListingEntry("user-data", NodeKind.FILE, "user-data"))
        else:
            extras.append(ListingEntry("user-data", NodeKind.FILE, "user-data"))
        nodes = (self._register(self.root, entry) for entry in extras)
        return [node for node in nodes if node is not None]

    # --- values ---------------------------------------------------------------------------

    async def stat(self, node: Node) -> NodeStat:
        """The node with its current value. A file's value is fetched (raising if it is gone or
        failing); a directory reports its listing only if cached, since its size is not its
        listing's and fetching it would cost a request per subdirectory."""
        if node.kind is NodeKind.FILE:
            value = await self.cache.get(node.imds_path)
            return NodeStat(node, value, self._version_of(node, value))
        if node.kind is NodeKind.DIRECTORY:
            return NodeStat(node, self.cache.peek(node.imds_path))
        return NodeStat(node, None)

    async def stat_children(self, directory: Node) -> list[NodeStat]:
        """Every child with its value, fetched concurrently so ``ls -l`` costs one round.

        A file that answers 404 is left out (listed but gone); one that fails, or is not
        fetched before the operation must answer (see `fallback_deadline`), is kept with an
        unknown size rather than failing the listing.
        """
        children = await self.children(directory)
        stats: dict[int, NodeStat] = {}
        gone: set[int] = set()
        self._start_read_ahead(children)

        async def fetch(node: Node) -> None:
            try:
                stats[node.inode] = await self.stat(node)
            except NotFound:
                gone.add(node.inode)
            except ImdsError as exc:  # the cache already warned, once per failing path
                log.debug("size of %s unknown: %s", loggable(node.imds_path), exc)

        with trio.move_on_at(fallback_deadline()):
            async with trio.open_nursery() as nursery:
                for node in children[:MAX_SIZES_PER_LISTING]:
                    nursery.start_soon(fetch, node)
        return [stats.get(n.inode, NodeStat(n, None)) for n in children if n.inode not in gone]

    def _version_of(self, node: Node, value: CachedValue) -> FileVersion:
        """The version holding *value*'s bytes: the current one, or a new inode for new bytes."""
        current = self._current.get(node.inode)
        if current is not None and (current.body is value.body or current.body == value.body):
            return current
        version = FileVersion(next(self._inodes), node, value.body, value.changed_at)
        self._current[node.inode] = version
        self._versions[version.inode] = version
        if current is not None and not self._lookups[current.inode]:
            del self._versions[current.inode]  # the kernel never saw it, or has forgotten it
        return version

    # --- what the kernel holds ------------------------------------------------------------

    def looked_up(self, inode: int) -> None:
        """The kernel now holds one more reference to *inode* (a lookup or readdirplus)."""
        if inode in self._versions:
            self._lookups[inode] += 1

    def forget(self, inode: int, count: int) -> None:
        """The kernel dropped *count* references; a superseded version it no longer holds is
        freed. Nodes stay: they are the tree."""
        if inode not in self._lookups:
            return
        self._lookups[inode] -= count
        if self._lookups[inode] > 0:
            return
        del self._lookups[inode]
        version = self._versions.get(inode)
        if version is not None and self._current.get(version.node.inode) is not version:
            del self._versions[inode]

    def version_count(self) -> int:
        """Values held for the kernel: the current one of each file read, plus superseded
        ones the kernel still holds (open files, cached dentries)."""
        return len(self._versions)

    # --- read-ahead and prefetch ----------------------------------------------------------

    def read_ahead_in(self, nursery: trio.Nursery | None) -> None:
        """From now on, `stat_children` also warms each subdirectory in *nursery* (None: stop):
        its listing and its files, one level down, at most `READ_AHEAD_REQUESTS` requests at
        a time.

        A walk (``grep -r``, ``find``, ``ls -R``) then finds each directory ready when it gets
        there, instead of paying one listing round trip and one round of files per directory
        in sequence."""
        self._read_ahead = nursery

    def _start_read_ahead(self, children: list[Node]) -> None:
        if self._read_ahead is None:
            return
        for node in children:
            if self._wants_read_ahead(node):
                self._warming.add(node.inode)  # one read-ahead per directory at a time
                self._read_ahead.start_soon(self._warm, node)

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
                for node in children[:MAX_SIZES_PER_LISTING]:
                    if node.kind is NodeKind.FILE:
                        nursery.start_soon(self._warm_file, node)
        except ImdsError as exc:  # left for the reader who asks; the cache warned once
            log.debug("read-ahead of %s skipped: %s", loggable(directory.imds_path), exc)
        except Exception:  # a bug here must not take the mount down with it
            log.exception("read-ahead of %s failed unexpectedly", loggable(directory.imds_path))
        finally:
            self._warming.discard(directory.inode)

    async def _warm_file(self, node: Node) -> None:
        try:
            async with self._read_ahead_slots:
                await self.cache.get(node.imds_path)
        except ImdsError as exc:
            log.debug("read-ahead of %s skipped: %s", loggable(node.imds_path), exc)
        except Exception:  # a bug here must not take the mount down with it
            log.exception("read-ahead of %s failed unexpectedly", loggable(node.imds_path))

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
                    children = await self.children(node)  # outside the nursery: its errors
                    async with trio.open_nursery() as nursery:  # would come out as a group
                        for child in children:
                            nursery.start_soon(walk, child)
            except ImdsError as exc:
                log.debug("prefetch of %s skipped: %s", loggable(node.imds_path), exc)
            except Exception:  # a bug here must not take the mount down with it
                log.exception("prefetch of %s failed unexpectedly", loggable(node.imds_path))

        await walk(directory or self.root)
        return fetched

    # --- the inode table ------------------------------------------------------------------

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
                    "IMDS listed more than %d paths; new names (first under /latest/%s) are "
                    "not shown until the next mount",
                    self.max_nodes,
                    parent.imds_path,
                )
            return None
        inode = next(self._inodes)
        self._by_key[key] = inode
        self._nodes[inode] = Node(
            inode, parent.inode, entry.name, entry.kind, entry.imds_path, entry.target
        )
        return self._nodes[inode]

    def nodes(self) -> Iterable[Node]:
        return self._nodes.values()
