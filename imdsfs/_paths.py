"""Paths as users see them: the one pattern language, which names can be files, and secrets.

Every layer above the provider speaks **mount paths**: the path under the mountpoint,
without a leading ``/``. A directory's own path (its listing) ends in ``/``, and the root's is
``""``: ``placement/`` lists ``placement/region``. Only the provider turns a mount path into a
URL (EC2: ``placement/region`` → ``/latest/meta-data/placement/region``).

**Patterns** (``--ttl`` rules, secret rules) are split on ``/`` and matched segment by
segment:

- ``*``, ``?`` and ``[...]`` match within one segment (case-sensitive); they never cross a
  ``/``.
- ``**`` as a whole segment matches zero or more segments: ``spot/**`` matches ``spot``
  itself and everything below it; ``**`` matches every path.
- A pattern ending in ``/`` matches listings only: ``**/`` is every listing and ``/`` alone is
  the root's. Other patterns match files and listings alike.
- A leading ``/`` is ignored.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from fnmatch import fnmatchcase

from ._errors import ConfigError

__all__ = [
    "CONTROL_NAME",
    "FS_TYPE",
    "MAX_NAME_BYTES",
    "MAX_NODES",
    "MAX_PATH_BYTES",
    "WATCH_NAME",
    "Pattern",
    "SecretRules",
    "check_path",
    "is_listing",
    "name_problem",
    "segments",
    "watch_name",
]

# The mount's own directory at its root, never listed (no service names a path so), and the
# directory of watch files in it (see `_watch`).
CONTROL_NAME = ".imdsfs"
# The type the kernel's mount table gives our mounts (``fsname=imds,subtype=imdsfs``).
FS_TYPE = "fuse.imdsfs"
WATCH_NAME = "watch"
MAX_NAME_BYTES = 255
# Longest path a node may have: far beyond any real tree, far below what a URL may hold.
MAX_PATH_BYTES = 8192
# Real trees hold a few hundred paths (a few thousand with 50 network interfaces). Past this
# many, new names are not shown, and an answer holding more paths is not read: a service
# inventing names must not grow the daemon without end.
MAX_NODES = 20_000
_MEMO_SIZE = 50_000  # paths whose loggable form is remembered (a tree holds at most 20 000)
# No real name holds these. Refusing them keeps a path from escaping its root or growing a
# query, and "%" from smuggling either in encoded.
_UNFETCHABLE = re.compile(r"[\x00-\x1f\x7f?#%\\]")


def is_listing(path: str) -> bool:
    """Whether *path* names a directory's listing (the root's is ``""``)."""
    return path == "" or path.endswith("/")


def watch_name(path: str) -> str:
    """The name of *path*'s watch file in ``.imdsfs/watch/``: *path* %-quoted, ``/`` too."""
    return urllib.parse.quote(path, safe="")


def segments(path: str) -> tuple[str, ...]:
    """``placement/region`` → ``("placement", "region")``; the root → ``()``."""
    body = path.strip("/")
    return tuple(body.split("/")) if body else ()


def name_problem(name: str) -> str | None:
    """Why *name* cannot be a file name in the mount, or None when it can."""
    if name in ("", ".", ".."):
        return "reserved or empty name"
    if "/" in name or "\0" in name:
        return "name contains '/' or NUL"
    if _UNFETCHABLE.search(name):  # it could be listed, but every read of it would fail
        return "name contains a control character or one of ?#%\\, so cannot be fetched"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"name longer than {MAX_NAME_BYTES} bytes"
    return None


def check_path(path: str) -> None:
    """Refuse a mount path no listing could have produced (a bug, not an answer)."""
    body = path.removesuffix("/")
    names = body.split("/") if body else []
    if (
        path.startswith("/")
        or len(path.encode("utf-8")) > MAX_PATH_BYTES
        or any(name_problem(name) for name in names)
    ):
        raise ConfigError(f"invalid IMDS path {path[:300]!r}")


class Pattern:
    """One pattern of the language in the module docstring."""

    def __init__(self, text: str) -> None:
        if not text:
            raise ConfigError("empty pattern")
        if "//" in text.strip("/"):
            raise ConfigError(f"pattern {text!r} has an empty segment")
        self.text = text
        self.listings_only = text.endswith("/")
        self._segments = segments(text)

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    def matches(self, path: str) -> bool:
        if self.listings_only and not is_listing(path):
            return False
        return _match(self._segments, segments(path))

    def covered_prefix(self, path: str) -> int | None:
        """For a pattern ending in ``**`` that matches *path*: how many leading segments of
        *path* the pattern names before its ``**`` (what lies below them is covered)."""
        if not self._segments or self._segments[-1] != "**" or not self.matches(path):
            return None
        return len(self._segments) - 1


def _match(pattern: tuple[str, ...], names: tuple[str, ...]) -> bool:
    if not pattern:
        return not names
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, names[i:]) for i in range(len(names) + 1))
    return bool(names) and fnmatchcase(names[0], head) and _match(rest, names[1:])


class SecretRules:
    """Which paths hold secrets (credentials, user data, identity proofs), and how to name a
    path in a log line without giving one away: below a secret directory (``.../**``), names
    are not shown, since a credential served as a directory has its lines read as names."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._patterns = tuple(Pattern(text) for text in patterns)
        self._shown: dict[str, str] = {}  # loggable's answers: asked for every request

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(pattern.text for pattern in self._patterns)

    def is_secret(self, path: str) -> bool:
        return any(pattern.matches(path.rstrip("/")) for pattern in self._patterns)

    def loggable(self, path: str) -> str:
        """*path* as a log line or an error message may show it."""
        shown = self._shown.get(path)
        if shown is None:
            if len(self._shown) > _MEMO_SIZE:
                self._shown.clear()
            shown = self._shown[path] = self._loggable(path)
        return shown

    def _loggable(self, path: str) -> str:
        names = segments(path)
        for pattern in self._patterns:
            kept = pattern.covered_prefix(path.rstrip("/"))
            if kept is not None and len(names) > kept:
                return "/".join(names[:kept]) + "/…"
        return path[:300]


def mount_table_path(path: str) -> str:
    """*path* as /proc/self/mounts and mountinfo write it (space, tab, newline and backslash
    as octal escapes), to compare with their fields."""
    for char in "\\ \t\n":
        path = path.replace(char, f"\\{ord(char):03o}")
    return path
