"""GCE's recursive JSON and the paths that read it: one set of rules for the provider (bulk
reads, the change feed) and the emulator (which serves them).

``GET /computeMetadata/v1/?recursive=true`` returns the tree as JSON whose fixed keys are
camelCase (``machineType``) while a path hyphenates them (``machine-type``); the names under
``attributes`` and ``serviceAccounts`` are kept as they are. From real captures:

- an object is a directory; so are lists of objects (``network-interfaces``) and the lists of
  addresses in `LIST_DIRECTORIES`, whose entries are their indexes;
- ``tags`` is a leaf of compact JSON; other lists of strings are leaves with one item per
  ``\\n``-terminated line;
- a string is a leaf of its UTF-8 bytes; a whole number its decimal digits.

A listing is one line per entry, each ending in ``\\n``, sub-directories with a trailing
``/``, sorted by name. A service account's directory also lists ``identity`` and ``token``,
which recursive JSON leaves out (they are minted per request).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from ._paths import MAX_NODES

__all__ = [
    "ACCOUNT_ENDPOINTS",
    "JSON_LEAVES",
    "LIST_DIRECTORIES",
    "NAMED_CHILDREN",
    "children",
    "compact",
    "expand",
    "is_directory",
    "json_key",
    "leaf_text",
    "path_name",
]

# Objects whose keys are names (an attribute, an account), not GCE's camelCase fields.
NAMED_CHILDREN = frozenset({"attributes", "serviceAccounts", "guestAttributes"})
# Lists served as directories of indexes even when they hold strings (or nothing yet).
LIST_DIRECTORIES = frozenset(
    {
        "accessConfigs",
        "disks",
        "forwardedIps",
        "forwardedIpv6s",
        "ipAliases",
        "ipv6AccessConfigs",
        "licenses",
        "networkInterfaces",
        "targetInstanceIps",
    }
)
JSON_LEAVES = frozenset({"tags"})
ACCOUNT_ENDPOINTS = ("identity", "token")
_UPPER = re.compile(r"[A-Z]")


def path_name(key: str) -> str:
    """``machineType`` → ``machine-type``: how a path names a fixed key."""
    return _UPPER.sub(lambda match: "-" + match.group().lower(), key)


def json_key(name: str) -> str:
    """``machine-type`` → ``machineType``: the key a new fixed path segment gets."""
    first, *rest = name.split("-")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def is_directory(key: str, value: object) -> bool:
    if isinstance(value, dict):
        return True
    if isinstance(value, list):
        return key in LIST_DIRECTORIES or any(isinstance(item, dict) for item in value)
    return False


def children(key: str, value: object, named: bool) -> Iterator[tuple[str, str, object]]:
    """``(path name, JSON key, value)`` of a directory's entries, sorted by name. *key* is the
    directory's own JSON key; *named*: its keys are names, kept as they are."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield str(index), str(index), item
    elif isinstance(value, dict):
        named_entries = ((k if named else path_name(k), k, v) for k, v in value.items())
        yield from sorted(named_entries, key=lambda entry: entry[0])


def leaf_text(key: str, value: object) -> bytes:
    """A leaf's default (``alt=text``) bytes."""
    if isinstance(value, list):
        if key in JSON_LEAVES:
            return compact(value)
        return "".join(f"{item}\n" for item in value).encode()
    return str(value).encode()


def compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def expand(tree: object, base: str = "", *, largest: int = 64 << 10) -> dict[str, bytes]:
    """Every listing and leaf a recursive answer for mount path *base* holds, by mount path:
    what plain GETs of each would return. Left out: a service account's listing (it also
    lists token and identity, which the answer lacks) and leaves over *largest* bytes (read
    one by one)."""
    found: dict[str, bytes] = {}
    key = base.rstrip("/").rsplit("/", 1)[-1]
    _expand(json_key(key) if key else "", tree, base, found, named=False, largest=largest)
    return found


def _expand(
    key: str, value: object, path: str, found: dict[str, bytes], named: bool, largest: int
) -> None:
    names = []
    for name, child_key, child in children(key, value, named):
        if is_directory(child_key, child):
            names.append(name + "/")
            below = f"{path}{name}/"
            _expand(child_key, child, below, found, child_key in NAMED_CHILDREN, largest)
        else:
            names.append(name)
            text = leaf_text(child_key, child)
            if len(text) <= largest:
                found[path + name] = text
        if len(found) + len(names) > MAX_NODES:
            raise ValueError(f"more than {MAX_NODES} paths in one answer")
    if _is_account_directory(path):
        return  # its listing also holds token and identity
    found[path] = "".join(name + "\n" for name in names).encode()


def _is_account_directory(path: str) -> bool:
    parts = path.rstrip("/").split("/")
    return len(parts) == 3 and parts[:2] == ["instance", "service-accounts"]
