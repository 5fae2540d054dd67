"""Looking inside a running mount: extended attributes on every node, and ``imdsfs stats``.

Every file and directory answers ``getfattr -d``::

    user.imds.url         the URL the bytes come from
    user.imds.fetched_at  when IMDS sent them (RFC 3339, UTC, whole seconds)
    user.imds.ttl         whole seconds before they are asked for again (0: on the next read)
    user.imds.source      live (fetched for this very request), cache, or stale (IMDS is
                          failing and the last good value stands in, see --stale-bound)

The last three describe the cached value. A file is fetched to answer, as ``stat`` would;
a directory's listing is not fetched just to describe it, so until something lists the
directory those three answer ENODATA. ``listxattr`` always names all four: it does no I/O.

The mount root also has ``user.imds.stats``: the cache and request counters as JSON. It is
how ``imdsfs stats MOUNTPOINT`` reads a running daemon without a control socket or a remount.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import sys
import time

import trio

from ._cache import CachedValue
from ._provider import NodeKind
from ._tree import MetadataTree, Node

__all__ = [
    "NODE_ATTRIBUTES",
    "STATS_ATTRIBUTE",
    "attribute_names",
    "format_stats",
    "node_attribute",
    "print_stats",
    "stats_json",
]

PREFIX = "user.imds."
NODE_ATTRIBUTES = tuple(PREFIX + name for name in ("url", "fetched_at", "ttl", "source"))
STATS_ATTRIBUTE = PREFIX + "stats"


def attribute_names(node: Node, *, is_root: bool) -> list[str]:
    """What ``listxattr`` reports: no I/O, so ``ls`` probing for ACLs costs nothing.

    Symlinks get none: the kernel only allows ``user.*`` attributes on files and directories.
    """
    if node.kind is NodeKind.SYMLINK:
        return []
    return [*NODE_ATTRIBUTES, *([STATS_ATTRIBUTE] if is_root else [])]


def node_attribute(name: str, node: Node, value: CachedValue | None, url: str) -> str | None:
    """The text of attribute *name* of *node* at *url* whose cached value is *value*; None:
    no such."""
    if name == PREFIX + "url":
        return url
    if value is None:
        return None
    if name == PREFIX + "fetched_at":
        return rfc3339(_wall_time(value.fetched_at))
    if name == PREFIX + "ttl":
        remaining = value.expires_at - trio.current_time()  # -inf after SIGHUP
        return str(int(remaining)) if remaining > 0 else "0"
    if name == PREFIX + "source":
        return value.source
    return None


def stats_json(tree: MetadataTree, mounted_at: float) -> str:
    """The ``user.imds.stats`` document: where from, since when, and every counter."""
    return json.dumps(
        {"endpoint": tree.endpoint, "mounted_at": rfc3339(mounted_at), **tree.statistics()}
    )


def rfc3339(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _wall_time(trio_time: float) -> float:
    """Cached values carry trio's clock (monotonic, mockable); users want wall time."""
    return time.time() - (trio.current_time() - trio_time)


# -- imdsfs stats ------------------------------------------------------------------------------


def print_stats(mountpoint: str, *, as_json: bool) -> int:
    """``imdsfs stats``: the counters of the daemon serving *mountpoint*; the exit status."""
    try:
        raw = os.getxattr(mountpoint, STATS_ATTRIBUTE)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            print(f"imdsfs: {mountpoint} is not an imdsfs mount", file=sys.stderr)
        else:
            print(f"imdsfs: {mountpoint}: {exc.strerror}", file=sys.stderr)
        return 1
    stats = json.loads(raw)
    print(json.dumps(stats, indent=2) if as_json else format_stats(stats))
    return 0


def format_stats(stats: dict[str, object]) -> str:
    """One ``name  value`` line per counter, values aligned, in the daemon's order."""
    width = max(len(name) for name in stats)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in stats.items())
