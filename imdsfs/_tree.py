"""The metadata tree: the inode table, and what is a directory, a file or a symlink.

The tree decides the kind of every entry from the listings the service serves (a trailing
``/``; the provider's quirks), never from a list of known paths, so new categories appear
without a release. Names that cannot be filenames are skipped, each warned about once.

Every node keeps its inode for the life of the mount: a metadata tree is a few hundred paths,
so numbers are never reused, and `MAX_NODES` bounds what a service inventing names can grow.

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

Paths here are mount paths (see `_paths`): a directory's ends in ``/`` (``placement/``), a
file's does not (``placement/region``), the root's is ``""``.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from ._cache import CachedValue, MetadataCache
from ._errors import ImdsError, NotFound
from ._flight import fallback_deadline
from ._paths import MAX_NODES
from ._provider import ListingEntry, NodeKind

__all__ = ["FileVersion", "MetadataTree", "Node", "NodeStat"]

log = logging.getLogger(__name__)

ROOT_INODE = 1
# Children whose values one readdir fetches to report their sizes; past this (no real
# directory comes close), sizes are left for ``stat`` to ask.
MAX_SIZES_PER_LISTING = 256
# Unusable names are warned about one by one up to this many; then once, and no more.
MAX_WARNED = 1000
# Bytes of file versions kept for the kernel to read; past this, the least recently opened
# are let go (and read from the cache again, if it still has them). Real trees hold a few
# hundred KiB.
VERSION_BYTES = 32 << 20
# Superseded versions the kernel never took (or has forgotten), kept a while longer: a reply
# already being built may still name one.
RECENT_VERSIONS = 1000


@dataclass(frozen=True)
class Node:
    inode: int
    parent: int
    name: str
    kind: NodeKind
    path: str  # mount path; a directory's ends in "/"
    target: str | None = None  # for symlinks: the sibling they point to
    secret: bool = False  # a file holding credentials or user data: root-only


@dataclass(frozen=True)
class FileVersion:
    """One value of a file, under an inode of its own (see the module docstring). Its bytes
    are kept apart (`MetadataTree.read_version`), within a budget; the digest says which
    value it is once they have been let go."""

    inode: int
    node: Node
    size: int
    digest: bytes
    changed_at: float  # wall clock: the mtime


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


@dataclass(frozen=True)
class NodeStat:
    """A node with what is known of its value: the listing for a directory, the bytes for a
    file, ``None`` for a symlink or when the fetch failed (size unknown). A file with a value
    has the `FileVersion` holding those bytes."""

    node: Node
    value: CachedValue | None
    version: FileVersion | None = None
    listed_until: float = math.inf  # trio clock: when the parent's listing must be read again

    @property
    def inode(self) -> int:
        """The inode the kernel is to know this entry by."""
        return self.version.inode if self.version is not None else self.node.inode


@dataclass
class _Listing:
    """A directory's listing as parsed from one body: nodes by name, in listing order."""

    body: bytes
    nodes: dict[str, Node]


class MetadataTree:
    """The inode table and the directory structure, read through a `MetadataCache`.

    *read_ahead_requests* bounds the requests the read-ahead keeps in flight: fewer than the
    client's ``--max-requests``, so a reader's own request never queues behind many of them.
    """

    def __init__(
        self,
        cache: MetadataCache,
        *,
        max_nodes: int = MAX_NODES,
        read_ahead_requests: int = 4,
    ) -> None:
        self.cache = cache
        self.max_nodes = max_nodes
        self._provider = cache.provider
        self._loggable = self._provider.secrets.loggable
        self._inodes = itertools.count(ROOT_INODE + 1)  # nodes and versions: never reused
        self._nodes: dict[int, Node] = {
            ROOT_INODE: Node(ROOT_INODE, ROOT_INODE, "", NodeKind.DIRECTORY, "")
        }
        self._by_key: dict[tuple[int, str, NodeKind], int] = {}
        self._listings: dict[int, _Listing] = {}  # directory inode → its parsed listing
        self._versions: dict[int, FileVersion] = {}  # version inode → version
        self._current: dict[int, FileVersion] = {}  # file node inode → its newest version
        self._lookups: Counter[int] = Counter()  # version inode → kernel lookup count
        self._recent: collections.deque[int] = collections.deque()  # superseded, not held
        self._bodies: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._body_bytes = 0
        self._read_ahead: trio.Nursery | None = None  # see `read_ahead_in`
        self._warming: set[int] = set()  # directories being read ahead now
        self._full = False  # max_nodes reached (logged once)
        self._read_ahead_slots = trio.CapacityLimiter(max(1, read_ahead_requests))
        self._warned: set[tuple[str, str]] = set()  # (directory, name) already warned about
        self._by_path: dict[str, int] = {"": ROOT_INODE}  # mount path → node inode
        self._listeners: list[Callable[[Node], None]] = []
        cache.add_listener(self._value_changed)

    def add_listener(self, listener: Callable[[Node], None]) -> None:
        """Call *listener* with a node whose value (or listing) has changed."""
        self._listeners.append(listener)

    def _value_changed(self, path: str) -> None:
        inode = self._by_path.get(path)
        if inode is None:  # never shown: nobody holds it
            return
        for listener in self._listeners:
            listener(self._nodes[inode])

    def new_inode(self) -> int:
        """An inode number no node or version has or will have, for the filesystem's own
        entries (``.imdsfs/``)."""
        return next(self._inodes)

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

    async def children(self, directory: Node, *, background: bool = False) -> list[Node]:
        """The current entries of *directory*, from its (cached) listing; *background*: for
        the read-ahead or prefetch, whose failures are summarised rather than logged."""
        nodes = list((await self._listing(directory, background)).nodes.values())
        if directory.inode == ROOT_INODE:
            nodes += [node for node in await self._root_extras() if node not in nodes]
        return nodes

    async def child(self, directory: Node, name: str) -> Node:
        """The entry *name* of *directory*: one dictionary lookup, whatever its size."""
        node = (await self._listing(directory)).nodes.get(name)
        if node is None and directory.inode == ROOT_INODE:
            node = next((n for n in await self._root_extras() if n.name == name), None)
        if node is None:
            raise NotFound(self._loggable(directory.path + name))
        return node

    async def _listing(self, directory: Node, background: bool = False) -> _Listing:
        """The parsed listing, parsed (and its nodes registered) once per listing body."""
        body = (await self.cache.get(directory.path, background=background)).body
        listing = self._listings.get(directory.inode)
        if listing is None or listing.body is not body:  # same bytes object: same listing
            parsed = self._provider.parse_listing(body, directory.path, limit=self.max_nodes)
            for name, reason in parsed.skipped:
                self._warn_once(directory.path, name, reason)
            nodes = (self._register(directory, entry) for entry in parsed.entries)
            listing = _Listing(body, {node.name: node for node in nodes if node is not None})
            self._listings[directory.inode] = listing
        return listing

    async def _root_extras(self) -> list[Node]:
        """What the provider adds to the root (EC2: ``dynamic/``, and ``user-data`` when the
        service has it): a file among them is shown unless it answers 404."""
        nodes = []
        for entry in self._provider.root_extras:
            if entry.kind is NodeKind.FILE and not await self._exists(entry.path):
                continue
            node = self._register(self.root, entry)
            if node is not None:
                nodes.append(node)
        return nodes

    async def _exists(self, path: str) -> bool:
        try:
            await self.cache.get(path)
        except NotFound:
            return False
        except ImdsError:  # unknown: show it; reading it reports the error
            pass
        return True

    # --- values ---------------------------------------------------------------------------

    async def stat(self, node: Node, *, background: bool = False) -> NodeStat:
        """The node with its current value. A file's value is fetched (raising if it is gone or
        failing); a directory reports its listing only if cached, since its size is not its
        listing's and fetching it would cost a request per subdirectory."""
        listed_until = self._listed_until(node)
        if node.kind is NodeKind.FILE:
            value = await self.cache.get(node.path, background=background)
            return NodeStat(node, value, self._version_of(node, value), listed_until)
        if node.kind is NodeKind.DIRECTORY:
            return NodeStat(node, self.cache.peek(node.path), listed_until=listed_until)
        return NodeStat(node, None, listed_until=listed_until)

    def _listed_until(self, node: Node) -> float:
        """When the listing that names *node* must be read again: the kernel keeps the name
        no longer, so a file deleted (or turned into a directory) goes with its listing."""
        if node.inode == ROOT_INODE:
            return math.inf
        listing = self.cache.peek(self._nodes[node.parent].path)
        return listing.expires_at if listing is not None else trio.current_time() + 1.0

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
            try:  # a size nobody named: its failure is summarised, not logged by path
                stats[node.inode] = await self.stat(node, background=True)
            except NotFound:
                gone.add(node.inode)
            except ImdsError as exc:  # the cache already warned, once per failing path
                log.debug("size of %s unknown: %s", self._loggable(node.path), exc)

        with trio.move_on_at(fallback_deadline()):
            async with trio.open_nursery() as nursery:
                for node in children[:MAX_SIZES_PER_LISTING]:
                    nursery.start_soon(fetch, node)
        return [stats.get(n.inode, NodeStat(n, None)) for n in children if n.inode not in gone]

    def _version_of(self, node: Node, value: CachedValue) -> FileVersion:
        """The version holding *value*'s bytes: the current one, or a new inode for new bytes."""
        current = self._current.get(node.inode)
        if current is not None and self._bodies.get(current.inode) is value.body:
            self._bodies.move_to_end(current.inode)
            return current  # the very bytes object it was made from: no need to hash them
        digest = _digest(value.body)
        if current is not None and current.digest == digest:
            self._keep_body(current.inode, value.body)
            return current
        version = FileVersion(next(self._inodes), node, len(value.body), digest, value.changed_at)
        self._current[node.inode] = version
        self._versions[version.inode] = version
        self._keep_body(version.inode, value.body)
        if current is not None and not self._lookups[current.inode]:
            self._retire(current.inode)
        return version

    async def read_version(self, version: FileVersion) -> tuple[bytes, bool]:
        """The bytes to serve for *version*, and whether they are exactly its own. Once its
        bytes have been let go (the budget), the cache's are used if they are the same
        value; else the current value is all there is (served without the page cache)."""
        body = self._bodies.get(version.inode)
        if body is not None:
            self._bodies.move_to_end(version.inode)
            return body, True
        value = await self.cache.get(version.node.path)
        if _digest(value.body) == version.digest:
            self._keep_body(version.inode, value.body)
            return value.body, True
        return value.body, False

    def _keep_body(self, inode: int, body: bytes) -> None:
        if inode in self._bodies:
            self._bodies.move_to_end(inode)
            return
        self._bodies[inode] = body
        self._body_bytes += len(body)
        while self._body_bytes > VERSION_BYTES and len(self._bodies) > 1:
            _, dropped = self._bodies.popitem(last=False)
            self._body_bytes -= len(dropped)

    def _drop_body(self, inode: int) -> None:
        body = self._bodies.pop(inode, None)
        if body is not None:
            self._body_bytes -= len(body)

    def _retire(self, inode: int) -> None:
        """A superseded version the kernel does not hold: kept among the recent ones for a
        while (a reply being built may name it), then freed."""
        self._recent.append(inode)
        while len(self._recent) > RECENT_VERSIONS:
            old = self._recent.popleft()
            version = self._versions.get(old)
            if version is not None and not self._lookups[old] and not self._is_current(version):
                del self._versions[old]
                self._drop_body(old)

    def _is_current(self, version: FileVersion) -> bool:
        return self._current.get(version.node.inode) is version

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
        if version is not None and not self._is_current(version):
            self._retire(inode)

    # --- read-ahead and prefetch ----------------------------------------------------------

    def read_ahead_in(self, nursery: trio.Nursery | None) -> None:
        """From now on, `stat_children` also warms each subdirectory in *nursery* (None: stop):
        its listing and its files, one level down, at most *read_ahead_requests* requests
        at a time.

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
            and self.cache.peek(node.path) is None
        )

    async def _warm(self, directory: Node) -> None:
        try:
            async with self._read_ahead_slots:
                children = await self.children(directory, background=True)
            async with trio.open_nursery() as nursery:
                for node in children[:MAX_SIZES_PER_LISTING]:
                    if node.kind is NodeKind.FILE:
                        nursery.start_soon(self._warm_file, node)
        except ImdsError as exc:  # left for the reader who asks; the cache warned once
            log.debug("read-ahead of %s skipped: %s", self._loggable(directory.path), exc)
        except Exception:  # a bug here must not take the mount down with it
            log.exception("read-ahead of %s failed unexpectedly", self._loggable(directory.path))
        finally:
            self._warming.discard(directory.inode)

    async def _warm_file(self, node: Node) -> None:
        try:
            async with self._read_ahead_slots:
                await self.cache.get(node.path, background=True)
        except ImdsError as exc:
            log.debug("read-ahead of %s skipped: %s", self._loggable(node.path), exc)
        except Exception:  # a bug here must not take the mount down with it
            log.exception("read-ahead of %s failed unexpectedly", self._loggable(node.path))

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
                    await self.cache.get(node.path, background=True)
                    fetched += 1
                elif node.kind is NodeKind.DIRECTORY:
                    children = await self.children(node, background=True)  # outside the
                    async with trio.open_nursery() as nursery:  # nursery: errors grouped
                        for child in children:
                            nursery.start_soon(walk, child)
            except ImdsError as exc:
                log.debug("prefetch of %s skipped: %s", self._loggable(node.path), exc)
            except Exception:  # a bug here must not take the mount down with it
                log.exception("prefetch of %s failed unexpectedly", self._loggable(node.path))

        await walk(directory or self.root)
        return fetched

    # --- the inode table ------------------------------------------------------------------

    def _register(self, parent: Node, entry: ListingEntry) -> Node | None:
        """The node for *entry*, created on first sight; None once the tree is full."""
        key = (parent.inode, entry.name, entry.kind)
        inode = self._by_key.get(key)
        if inode is not None:
            node = self._nodes[inode]
            if node.target != entry.target:  # a public key's name now names another index
                node = dataclasses.replace(node, target=entry.target)
                self._nodes[inode] = node
            return node
        if len(self._nodes) >= self.max_nodes:
            if not self._full:
                self._full = True
                log.error(
                    "the service listed more than %d paths; new names (first in %s) are "
                    "not shown until the next mount",
                    self.max_nodes,
                    self._provider.where(parent.path),
                )
            return None
        inode = next(self._inodes)
        self._by_key[key] = inode
        self._by_path[entry.path] = inode
        secret = entry.kind is NodeKind.FILE and self._provider.secrets.is_secret(entry.path)
        self._nodes[inode] = Node(
            inode, parent.inode, entry.name, entry.kind, entry.path, entry.target, secret
        )
        return self._nodes[inode]

    def _warn_once(self, directory: str, name: str, reason: str) -> None:
        """One warning per unusable name; past `MAX_WARNED` of them, one more and silence."""
        if (directory, name) in self._warned or len(self._warned) > MAX_WARNED:
            return
        self._warned.add((directory, name))
        if len(self._warned) > MAX_WARNED:
            log.warning("more than %d unusable names skipped; no longer logging each", MAX_WARNED)
        elif self._loggable(directory + name).endswith("…"):  # the name may be a secret
            log.warning("skipping an entry in %s: %s", self._provider.where(directory), reason)
        else:
            where = self._provider.where(directory)
            log.warning("skipping entry %r in %s: %s", name[:300], where, reason)

    # --- introspection --------------------------------------------------------------------

    def url(self, node: Node) -> str:
        """Where the node's bytes come from (``user.imds.url``)."""
        return self._provider.url(node.path)

    @property
    def endpoint(self) -> str:
        return self._provider.endpoint

    def statistics(self) -> dict[str, int]:
        """The cache's and client's counters, and the file versions held for the kernel."""
        return {**self.cache.statistics(), "versions": len(self._versions)}

    def nodes(self) -> Iterable[Node]:
        return self._nodes.values()
