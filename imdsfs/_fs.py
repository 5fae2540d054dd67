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
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar

import pyfuse3
import trio

from . import _introspect as introspect
from ._budget import Budgets
from ._errors import Forbidden, ImdsError, NotFound, ResponseTooLarge, Throttled
from ._provider import NodeKind
from ._tree import FileVersion, MetadataTree, Node, NodeStat

__all__ = ["FsConfig", "ImdsOperations"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


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
        self._files: dict[int, bytes] = {}
        self._dirs: dict[int, _OpenDirectory] = {}
        self._budgets = Budgets(config.timeout)
        self._attached = False  # the kernel's session is up (`init`): notifications may go
        tree.add_listener(self._value_changed)

    def init(self) -> None:
        """The kernel answered FUSE_INIT: from now on it may be told of changes."""
        self._attached = True

    def _value_changed(self, node: Node) -> None:
        """A file's value changed: make the kernel drop its name for it now, rather than when
        its entry times out, so the next open finds the new value (the new inode)."""
        if not self._attached or node.kind is not NodeKind.FILE:
            return
        pyfuse3.invalidate_entry_async(node.parent, os.fsencode(node.name), ignore_enoent=True)

    # --- names and attributes -------------------------------------------------------------

    @_handler
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
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

    # --- directories ----------------------------------------------------------------------

    @_handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
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
        if opened.entries is None:
            with self._budgets.listing(opened.thread, opened.node.inode):
                opened.entries = await self.tree.stat_children(opened.node)
        return opened.entries

    # --- files ----------------------------------------------------------------------------

    @_handler
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        found = self.tree.entry(inode)
        fh = next(self._handles)
        with self._budgets.request(ctx.pid, inode):
            return await self._open(fh, found)

    async def _open(self, fh: int, found: Node | FileVersion) -> pyfuse3.FileInfo:
        if isinstance(found, FileVersion):
            body, exact = await self.tree.read_version(found)
            self._files[fh] = body
            if exact:  # bytes that never change: the page cache may keep them
                return pyfuse3.FileInfo(fh=fh, keep_cache=True)
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
        if found.kind is not NodeKind.FILE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        value = (await self.tree.stat(found)).value
        assert value is not None  # a file's stat always carries its value
        self._files[fh] = value.body  # the kernel has no size for this inode to trust
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    @_handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return self._files[fh][off : off + size]

    async def release(self, fh: int) -> None:
        self._files.pop(fh, None)

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

    def _negative_entry(self) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = 0  # "no such name", remembered by the kernel for entry_timeout
        attrs.entry_timeout = self.config.negative_timeout
        return attrs


@dataclass
class _OpenDirectory:
    """An open directory: its entries are listed once, so offsets stay valid while the
    service changes; *thread* opened it (its budget: see `Budgets`)."""

    node: Node
    thread: int
    entries: list[NodeStat] | None = None


def _mode(node: Node, secret_mode: int) -> int:
    if node.kind is NodeKind.DIRECTORY:
        return stat.S_IFDIR | 0o555
    if node.kind is NodeKind.SYMLINK:
        return stat.S_IFLNK | 0o777
    return stat.S_IFREG | (secret_mode if node.secret else 0o444)
