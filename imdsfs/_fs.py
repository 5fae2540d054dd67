"""The pyfuse3 `Operations`: translation between kernel requests and the `MetadataTree`.

Nothing here speaks HTTP or decides caching policy. Each handler runs under one absolute
deadline, set where the request enters, and maps the one exception hierarchy to errno in
`_errno_for`, because any other exception escaping a handler tears the whole mount down.

How the kernel caches what these handlers answer (see `_tree` for why a file's inode names
one value):

- A file version's attributes and bytes never change, so its pages are kept across opens
  (``keep_cache``) and its attributes for the longest the kernel is allowed to keep them;
  its *entry* (name → inode) lasts only as long as the value's TTL, after which the kernel
  looks the name up again and finds the newer version, if any.
- A file whose value is not known (its inode is the node's own) has no cached size, entry
  or pages: it is read with ``direct_io`` from the bytes taken at open.
- Only values the mount expects to keep (a TTL of an hour or more) are read through the page
  cache; the others are read with ``direct_io``, so that a process told by ``poll()`` that
  the value changed reads the new one after ``lseek(0)`` on the same descriptor (a page
  cache would go on serving the old one; ``mmap`` with ``MAP_SHARED`` is refused for them).

Waiting (see `_watch`): an open file polled for ``POLLPRI`` is woken when its value changes
(``POLLPRI|POLLERR`` when it is gone), and its next read at offset 0 takes the new value. The
watch files of ``.imdsfs/watch/`` do the same for paths that need not exist.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import select
import stat
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar

import pyfuse3
import trio

from . import _introspect as introspect
from ._budget import Budgets
from ._errors import Forbidden, ImdsError, NotFound, ResponseTooLarge, Throttled
from ._paths import CONTROL_NAME, WATCH_NAME
from ._provider import NodeKind
from ._tree import FileVersion, MetadataTree, Node, NodeStat
from ._watch import Watches, WatchFile, WatchFiles

__all__ = ["FsConfig", "ImdsOperations"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
# A value kept at least this long is taken to last: read through the page cache.
STABLE_TTL = 3600.0
_READABLE = select.POLLIN | select.POLLRDNORM


@dataclass(frozen=True)
class FsConfig:
    """What the kernel-facing side needs to know; policy lives in the tree and cache."""

    timeout: float = 5.0  # --deadline: seconds any one request may take, retries and all
    uid: int = 0
    gid: int = 0
    secret_mode: int = 0o400  # credential files and user-data, always owned by root
    max_kernel_timeout: float = 60.0  # cap on entry/attr caching in the kernel
    negative_timeout: float = 1.0  # how long the kernel remembers "no such name"


def _errno_for(exc: ImdsError) -> int:
    if isinstance(exc, NotFound):
        return errno.ENOENT
    if isinstance(exc, Forbidden):
        return errno.EACCES
    if isinstance(exc, Throttled):
        return errno.EAGAIN
    if isinstance(exc, ResponseTooLarge):
        return errno.EFBIG
    return errno.EIO


def _handler(
    method: Callable[Concatenate[ImdsOperations, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[ImdsOperations, P], Coroutine[Any, Any, R]]:
    """Run a handler under the deadline and let nothing but `FUSEError` out."""

    @functools.wraps(method)
    async def wrapper(self: ImdsOperations, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with trio.fail_after(self.config.timeout):
                return await method(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except ImdsError as exc:  # the cache warned once for the failing path; not per call
            log.debug("%s: %s", method.__name__, exc)
            raise pyfuse3.FUSEError(_errno_for(exc)) from None
        except trio.TooSlowError:
            log.warning(
                "%s: no answer within the %.1f s deadline", method.__name__, self.config.timeout
            )
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("%s failed unexpectedly", method.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


async def _read_only(*_args: object, **_kwargs: object) -> NoReturn:
    raise pyfuse3.FUSEError(errno.EROFS)


class ImdsOperations(pyfuse3.Operations):
    """A read-only view of the metadata tree."""

    supports_dot_lookup = False  # no NFS export

    def __init__(self, tree: MetadataTree, config: FsConfig = FsConfig()) -> None:
        super().__init__()
        self.tree = tree
        self.config = config
        self._started = time.time()
        self._handles = itertools.count(1)
        self._files: dict[int, _OpenFile] = {}
        self._dirs: dict[int, _OpenDirectory] = {}
        self._budgets = Budgets(config.timeout)
        self._attached = False  # the kernel's session is up (`init`): notifications may go
        # Its `run` refreshes the watched paths (the mount starts it).
        self.watches = Watches(tree.cache, refreshed=self._wake_pollers)
        self._watch_files = WatchFiles(tree.new_inode(), tree.new_inode())
        self._pollers: defaultdict[str, set[int]] = defaultdict(set)  # path → polled fhs
        tree.add_listener(self._value_changed)
        tree.cache.add_listener(functools.partial(self._wake_pollers, told=True))

    def init(self) -> None:
        """The kernel answered FUSE_INIT: from now on it may be told of changes."""
        self._attached = True

    def _value_changed(self, node: Node) -> None:
        """A file's value changed: make the kernel drop its name for it now, rather than when
        its entry times out, so the next open finds the new value (the new inode)."""
        if not self._attached or node.kind is not NodeKind.FILE:
            return
        pyfuse3.invalidate_entry_async(node.parent, os.fsencode(node.name), ignore_enoent=True)

    def _wake_pollers(self, path: str, told: bool = False) -> None:
        """*path* was asked for again, or (*told*) the cache learnt that its value changed,
        perhaps only that it did (a change feed's news, the value not yet asked for): each
        poller whose value is not the one now known is woken, once per poll (the kernel asks
        `poll` again, which reports ``POLLPRI`` until the new value is read). A poll
        notification takes no kernel lock, so it may go from inside any handler."""
        for fh in self._pollers.get(path, ()):
            opened = self._files[fh]
            if opened.changed or not self._outdated(opened, unknown=told):
                continue
            opened.changed = True
            if opened.handle is not None:
                with contextlib.suppress(OSError):  # the session is ending (ENODEV)
                    opened.handle.notify()
                opened.handle = None

    def _outdated(self, opened: _OpenFile, unknown: bool = False) -> bool:
        """Whether the cache knows a value of the path other than the one *opened* serves
        (gone counts, for a file), or, with no value known, what *unknown* says: after a
        change feed's news it counts; after a failure to ask, it tells nothing."""
        cache = self.tree.cache
        value = cache.peek(opened.path)
        if value is not None:
            return value.body != opened.body
        if cache.absent(opened.path):
            return opened.body is not None or opened.watch_file is None
        return unknown

    def _unknown(self, path: str) -> bool:
        """Whether the cache knows neither a fresh value of *path* nor that it is gone."""
        return self.tree.cache.peek(path) is None and not self.tree.cache.absent(path)

    # --- names and attributes -------------------------------------------------------------

    @_handler
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        at_root = parent_inode == pyfuse3.ROOT_INODE
        if self._is_control(parent_inode) or (at_root and name == os.fsencode(CONTROL_NAME)):
            return self._control_lookup(parent_inode, os.fsdecode(name))
        parent = self.tree.node(parent_inode)
        with self._budgets.lookup(ctx.pid, parent_inode) as returned:
            if name in (b".", b".."):
                inode = parent.inode if name == b"." else parent.parent
                return self._attributes(await self.tree.stat(self.tree.node(inode)))
            try:
                entry = await self.tree.stat(await self.tree.child(parent, os.fsdecode(name)))
            except NotFound:
                return self._negative_entry()
            returned(entry.inode)
        self.tree.looked_up(entry.inode)
        return self._attributes(entry)

    @_handler
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if self._is_control(inode):
            return self._control_attributes(inode)
        found = self.tree.entry(inode)
        if isinstance(found, FileVersion):  # attributes that never change: no fetch
            return self._attributes(NodeStat(found.node, None, found))
        with self._budgets.request(ctx.pid, inode):
            entry = await self.tree.stat(found)
        return self._attributes(NodeStat(entry.node, entry.value))  # as this inode, not a version

    @_handler
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.tree.node(inode)
        if node.target is None:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(node.target)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        """Superseded file versions the kernel no longer holds are freed; nodes stay."""
        for inode, count in inode_list:
            self.tree.forget(inode, count)
            self._watch_files.forget(inode, count)

    # --- directories ----------------------------------------------------------------------

    @_handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode in (self._watch_files.control_inode, self._watch_files.watch_inode):
            fh = next(self._handles)
            self._dirs[fh] = _OpenDirectory(None, ctx.pid, entries=[])  # nothing listed
            return fh
        node = self.tree.node(inode)
        if node.kind is not NodeKind.DIRECTORY:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = next(self._handles)
        self._dirs[fh] = _OpenDirectory(node, ctx.pid)
        return fh

    @_handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = await self._listing_snapshot(fh)
        for index in range(start_id, len(entries)):
            entry = entries[index]
            name = os.fsencode(entry.node.name)
            if not pyfuse3.readdir_reply(token, name, self._attributes(entry), index + 1):
                break
            self.tree.looked_up(entry.inode)  # readdirplus: the kernel holds the entry now

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    async def _listing_snapshot(self, fh: int) -> list[NodeStat]:
        """Fetched once per open directory, so offsets stay valid while IMDS changes."""
        opened = self._dirs[fh]
        if opened.entries is None and opened.node is not None:
            with self._budgets.listing(opened.thread, opened.node.inode):
                opened.entries = await self.tree.stat_children(opened.node)
        return opened.entries or []

    # --- files ----------------------------------------------------------------------------

    @_handler
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        fh = next(self._handles)
        watch_file = self._watch_files.get(inode)
        if watch_file is not None:
            with self._budgets.request(ctx.pid, inode):
                return await self._open_watch_file(fh, watch_file)
        found = self.tree.entry(inode)
        with self._budgets.request(ctx.pid, inode):
            return await self._open(fh, found)

    async def _open(self, fh: int, found: Node | FileVersion) -> pyfuse3.FileInfo:
        if isinstance(found, FileVersion):
            body, exact = await self.tree.read_version(found)
            opened = self._files[fh] = _OpenFile(found.node.path, body)
            if exact and self.tree.cache.ttl(found.node.path) >= STABLE_TTL:
                opened.page_cached = True
                return pyfuse3.FileInfo(fh=fh, keep_cache=True)  # bytes that never change
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
        if found.kind is not NodeKind.FILE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        value = (await self.tree.stat(found)).value
        assert value is not None  # a file's stat always carries its value
        self._files[fh] = _OpenFile(found.path, value.body)  # no size the kernel may trust
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    async def _open_watch_file(self, fh: int, watch_file: WatchFile) -> pyfuse3.FileInfo:
        """A watch file serves its path's value (ENODATA while there is none), and is
        watched from open to release, polled or not."""
        opened = _OpenFile(watch_file.path, None, watch_file=watch_file)
        if self.watches.full(opened.path):  # first: it holds however long one waits
            raise pyfuse3.FUSEError(errno.ENOSPC)  # as inotify says past max_user_watches
        new = not self.watches.watched(opened.path) and self._unknown(opened.path)
        if new and not self._watch_files.may_ask(trio.current_time()):
            raise pyfuse3.FUSEError(errno.EAGAIN)  # new names too fast: try again shortly
        self.watches.add(opened.path)
        try:
            await self._take_value(opened)
        except ImdsError:  # not answering now: the first read asks again, and says so
            opened.changed = True
        except BaseException:
            self.watches.discard(opened.path)
            raise
        self._files[fh] = opened
        self._watch_files.opened(watch_file)
        self._start_polling(fh, opened, watched=True)
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    @_handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        opened = self._files[fh]
        if off == 0 and opened.changed:  # reading again from the start: the new value
            await self._take_value(opened)
        if opened.body is None:
            raise pyfuse3.FUSEError(errno.ENODATA)
        return opened.body[off : off + size]

    async def _take_value(self, opened: _OpenFile) -> None:
        """The path's current value into *opened*; a file gone keeps its last bytes. The
        change counts as taken even if asking fails: the next refresh that finds a value
        wakes the poller again (keeping POLLPRI would spin it on EIO meanwhile)."""
        opened.changed = False
        try:
            opened.body = (await self.tree.cache.get(opened.path)).body
        except NotFound:
            if opened.watch_file is not None:
                opened.body = None

    @_handler
    async def poll(
        self,
        inode: int,
        fh: int,
        poll_handle: pyfuse3.PollHandle | None,
        ctx: pyfuse3.RequestContext,
    ) -> int:
        """Readable while there is a value; ``POLLPRI`` once it changed, until read from
        offset 0; ``POLLERR`` too while the file is gone."""
        opened = self._files[fh]
        if not opened.polled:
            self._start_polling(fh, opened)
            opened.changed = self._outdated(opened)  # changed since it was opened
            if not opened.changed and self._unknown(opened.path):
                self.watches.ask_now(opened.path)  # it may have: find out
        if poll_handle is not None:
            opened.handle = poll_handle  # replaces (and so drops) any older one
        mask = _READABLE if opened.body is not None else 0
        if opened.changed:
            mask |= select.POLLPRI
            if opened.page_cached:  # its reads never reach us: tell once per value
                opened.changed = False
                opened.body = self._known_body(opened.path, opened.body)
        if opened.watch_file is None and self.tree.cache.absent(opened.path):
            mask |= select.POLLPRI | select.POLLERR
        return mask

    def _start_polling(self, fh: int, opened: _OpenFile, watched: bool = False) -> None:
        """*fh* is woken when its path changes; its path is refreshed while it is polled
        (unless *watched* already, or `MAX_WATCHED` paths are: then only what others read,
        or a change feed, wakes it)."""
        opened.polled = True
        self._pollers[opened.path].add(fh)
        opened.watched = watched or self.watches.add(opened.path)

    def _known_body(self, path: str, otherwise: bytes | None) -> bytes | None:
        value = self.tree.cache.peek(path)
        return otherwise if value is None else value.body

    async def release(self, fh: int) -> None:
        opened = self._files.pop(fh, None)
        if opened is None:
            return
        if opened.polled:
            self._pollers[opened.path].discard(fh)
            if not self._pollers[opened.path]:
                del self._pollers[opened.path]
        if opened.watched:
            self.watches.discard(opened.path)
        if opened.watch_file is not None:
            self._watch_files.released(opened.watch_file)

    # --- the file system as a whole -------------------------------------------------------

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_namemax = 255
        data.f_files = sum(1 for _ in self.tree.nodes())
        return data

    @_handler
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        """``user.imds.*`` (see `_introspect`). Other names (``ls`` asks for ACLs and SELinux
        labels) are refused before any lookup, so they never cost a request."""
        if self._is_control(inode):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        node = self.tree.node(inode)
        attribute = os.fsdecode(name)
        if attribute not in introspect.attribute_names(node, is_root=inode == pyfuse3.ROOT_INODE):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        if attribute == introspect.STATS_ATTRIBUTE:
            return introspect.stats_json(self.tree, self._started).encode()
        with self._budgets.request(ctx.pid, inode):
            value = (await self.tree.stat(node)).value
        text = introspect.node_attribute(attribute, node, value, self.tree.url(node))
        if text is None:  # a directory whose listing is not cached: nothing to describe
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return text.encode()

    @_handler
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        if self._is_control(inode):
            return []
        node = self.tree.node(inode)
        names = introspect.attribute_names(node, is_root=inode == pyfuse3.ROOT_INODE)
        return [os.fsencode(name) for name in names]

    # Everything that would change the tree: the mount is read-only.
    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _read_only
    write = create = setxattr = removexattr = _read_only

    # --- attributes -----------------------------------------------------------------------

    def _attributes(self, entry: NodeStat) -> pyfuse3.EntryAttributes:
        node, value, version = entry.node, entry.value, entry.version
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = entry.inode
        attrs.st_uid, attrs.st_gid = (0, 0) if node.secret else (self.config.uid, self.config.gid)
        attrs.st_mode = _mode(node, self.config.secret_mode)
        attrs.st_nlink = 2 if node.kind is NodeKind.DIRECTORY else 1
        changed = value.changed_at if value is not None else self._started
        if version is not None:
            changed = version.changed_at
        attrs.st_atime_ns = attrs.st_ctime_ns = attrs.st_mtime_ns = int(changed * 1e9)
        attrs.entry_timeout = attrs.attr_timeout = self._kernel_timeout(entry)
        if version is not None:
            attrs.attr_timeout = self.config.max_kernel_timeout  # they never change
        size = version.size if version else len(value.body) if value is not None else None
        if node.kind is NodeKind.SYMLINK:
            attrs.st_size = len(os.fsencode(node.target or ""))
        elif node.kind is NodeKind.FILE and size is not None:
            attrs.st_size = size
            attrs.st_blocks = (size + 511) // 512
        return attrs

    def _kernel_timeout(self, entry: NodeStat) -> float:
        """As long as the backend would serve the same value and the listing naming it still
        holds, never longer than the cap.

        A file not known by a version (size unknown, or reported for the node's own inode)
        gets 0: the kernel must ask again rather than trust a size that may change."""
        if entry.node.kind is NodeKind.FILE and entry.version is None:
            return 0.0
        if entry.value is None:
            return 0.0 if entry.node.kind is NodeKind.FILE else 1.0
        until = min(entry.value.expires_at, entry.listed_until)
        return max(0.0, min(until - trio.current_time(), self.config.max_kernel_timeout))

    # --- .imdsfs/: the watch files --------------------------------------------------------

    def _is_control(self, inode: int) -> bool:
        files = self._watch_files
        return inode in (files.control_inode, files.watch_inode) or files.get(inode) is not None

    def _control_lookup(self, parent: int, name: str) -> pyfuse3.EntryAttributes:
        files = self._watch_files
        if parent == pyfuse3.ROOT_INODE:
            return self._control_attributes(files.control_inode)
        if parent == files.control_inode and name == WATCH_NAME:
            return self._control_attributes(files.watch_inode)
        if parent != files.watch_inode:
            return self._negative_entry()
        try:
            found = files.lookup(name, self.tree.new_inode)
        except NotFound:
            return self._negative_entry()
        return self._control_attributes(found.inode)

    def _control_attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        """``.imdsfs/`` and ``watch/`` are root's directories; a watch file is as readable as
        the file it watches (a secret's only by root), and its size is unknown (0)."""
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = inode
        attrs.st_atime_ns = attrs.st_ctime_ns = attrs.st_mtime_ns = int(self._started * 1e9)
        attrs.entry_timeout = attrs.attr_timeout = 0.0
        watch_file = self._watch_files.get(inode)
        if watch_file is None:
            attrs.st_mode, attrs.st_nlink = stat.S_IFDIR | 0o555, 2
            return attrs
        secret = self.tree.cache.provider.secrets.is_secret(watch_file.path)
        attrs.st_uid, attrs.st_gid = (0, 0) if secret else (self.config.uid, self.config.gid)
        attrs.st_mode = stat.S_IFREG | (self.config.secret_mode if secret else 0o444)
        attrs.st_nlink = 1
        return attrs

    def _negative_entry(self) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = 0  # "no such name", remembered by the kernel for entry_timeout
        attrs.entry_timeout = self.config.negative_timeout
        return attrs


@dataclass
class _OpenDirectory:
    """An open directory: its entries are listed once, so offsets stay valid while the
    service changes; *thread* opened it (its budget: see `Budgets`). No node: ``.imdsfs/``,
    which lists nothing."""

    node: Node | None
    thread: int
    entries: list[NodeStat] | None = None


@dataclass
class _OpenFile:
    """An open file: the value it serves (taken at open, None while a watched path has
    none) and, once polled, whether a newer one is known and the handle to wake the poller."""

    path: str
    body: bytes | None
    watch_file: WatchFile | None = None
    polled: bool = False
    watched: bool = False  # counted among the path's waiters (see `Watches`)
    changed: bool = False
    handle: pyfuse3.PollHandle | None = None
    # Read through the page cache (a value kept an hour or more): a change is told once,
    # and reading it needs a new open (the kernel answers this one's reads from its pages).
    page_cached: bool = False


def _mode(node: Node, secret_mode: int) -> int:
    if node.kind is NodeKind.DIRECTORY:
        return stat.S_IFDIR | 0o555
    if node.kind is NodeKind.SYMLINK:
        return stat.S_IFLNK | 0o777
    return stat.S_IFREG | (secret_mode if node.secret else 0o444)
