"""The GCE metadata tree: an instance as GCE's own recursive JSON, and how a GET reads it.

The document is what ``GET /computeMetadata/v1/?recursive=true`` returns on a VM: compact
JSON whose fixed keys are camelCase (``machineType``, ``networkInterfaces``) while the names
under ``attributes`` and ``serviceAccounts`` are the user's or the account's own. A path names
a fixed key hyphenated (``machine-type``) and a user's name as it is. Values are strings,
whole numbers (``id``, ``mtu``, ``index``: JSON numbers, as GCE sends them), lists and objects.

How each node reads, path by path (from real captures of listings, recursive JSON and
``alt=text`` dumps; see the README's GCE section):

- an object is a directory: one line per entry, each ending in ``\\n``, sub-directories
  with a trailing ``/``, sorted by name; an empty directory is an empty body;
- a list of objects (``disks``, ``network-interfaces``, ``access-configs``, ``licenses``) and
  the lists of addresses (``forwarded-ips``, ``ip-aliases``, ...) are directories of indexes;
- ``tags`` is a leaf of compact JSON (``application/json``);
- other lists of strings (``scopes``, ``aliases``, ``dns-servers``) are leaves with one item
  per ``\\n``-terminated line;
- a string is a leaf of its UTF-8 bytes, nothing added; a number its decimal digits.

A service account's directory also lists ``identity`` and ``token``, which are not in the
document: they are minted per request. Not thread-safe: ``LiveGce`` guards it with a lock.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from .._document import read_document_file
from .._errors import DocumentError
from .._gce_tree import (
    ACCOUNT_ENDPOINTS,
    JSON_LEAVES,
    NAMED_CHILDREN,
    compact,
    is_directory,
    json_key,
    path_name,
)

__all__ = ["GceDocument", "GceNode", "Value", "load_gce_document"]

Value: TypeAlias = "str | int | list[Value] | dict[str, Value]"
Kind = Literal["directory", "leaf", "token", "identity"]

_SERVICE_ACCOUNT_ENDPOINTS = ACCOUNT_ENDPOINTS
_JSON_LEAVES = JSON_LEAVES
_NAMED_CHILDREN = NAMED_CHILDREN


@dataclass(frozen=True)
class GceNode:
    """One place in the tree, as a GET finds it."""

    kind: Kind
    value: Value
    key: str  # the JSON key (or list index) it sits under; "" for the root
    named_children: bool  # its keys are names, kept as they are in paths
    account: str | None = None  # a service account's directory (or its token/identity): its name


class GceDocument:
    """A validated GCE document (the recursive JSON form) with GCE's read rules."""

    def __init__(self, root: dict[str, Value]) -> None:
        self._root = root  # private: use from_dict/from_json/load_gce_document, which validate

    @classmethod
    def from_dict(cls, data: Mapping[str, object], source: str = "<dict>") -> GceDocument:
        """Validate the recursive JSON form; DocumentError names the JSON Pointer of a fault."""
        root = _parse(data, source, "", "", named=False)
        if not isinstance(root, dict):
            raise DocumentError(f"{source}: document root: expected an object")
        for required in ("instance", "project"):
            if not isinstance(root.get(required), dict):
                raise DocumentError(f'{source}: document root: "{required}" must be an object')
        return cls(root)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<string>") -> GceDocument:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DocumentError(f"{source}: not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise DocumentError(f"{source}: document root: expected an object")
        return cls.from_dict(data, source)

    def copy(self) -> GceDocument:
        return GceDocument(copy.deepcopy(self._root))

    def to_dict(self) -> dict[str, Value]:
        return copy.deepcopy(self._root)

    # -- finding ----------------------------------------------------------------------------

    def find(self, segments: Sequence[str]) -> GceNode | None:
        """The node a path names (segments without slashes; none = the root), or None."""
        node = GceNode("directory", self._root, "", named_children=False)
        for segment in segments:
            if node.kind != "directory":
                return None
            child = dict(_children(node)).get(segment)
            if child is None:
                return _account_endpoint(node, segment)
            node = child
        return node

    # -- reading ----------------------------------------------------------------------------

    def listing(self, node: GceNode) -> bytes:
        names = [
            name + "/" if child.kind == "directory" else name for name, child in _children(node)
        ]
        if _is_account(node):
            names = sorted([*names, *_SERVICE_ACCOUNT_ENDPOINTS])
        return "".join(name + "\n" for name in names).encode()

    def text(self, node: GceNode) -> tuple[bytes, bool]:
        """A leaf's default form: its bytes, and whether they are JSON (``tags``)."""
        value = node.value
        if isinstance(value, list):
            if node.key in _JSON_LEAVES:
                return compact(value), True
            return "".join(f"{item}\n" for item in value).encode(), False
        return str(value).encode(), False

    def as_json(self, node: GceNode) -> bytes:
        """``?recursive=true`` on a directory, ``?alt=json`` on a leaf: compact JSON, keys
        sorted, numbers as numbers."""
        return compact(node.value)

    def as_text(self, node: GceNode) -> bytes:
        """``?recursive=true&alt=text``: a ``path value`` line per value below ``node``, paths
        relative to it; a list leaf gives one line per item (as in captured dumps)."""
        return "".join(f"{path} {value}\n" for path, value in _text_lines(node, "")).encode()

    def listing_json(self, node: GceNode) -> bytes:
        """``?alt=json`` on a directory without ``recursive``: its listing as a JSON array."""
        return compact([line for line in self.listing(node).decode().split("\n") if line])

    def leaves(self) -> dict[str, bytes]:
        """Every leaf's default bytes by its path (``instance/id``); not token or identity."""
        found: dict[str, bytes] = {}

        def walk(node: GceNode, prefix: str) -> None:
            for name, child in _children(node):
                if child.kind == "directory":
                    walk(child, f"{prefix}{name}/")
                else:
                    found[prefix + name] = self.text(child)[0]

        walk(GceNode("directory", self._root, "", named_children=False), "")
        return found

    def value(self, path: str) -> Value | None:
        """The JSON value at ``path`` (a copy), or None."""
        node = self.find(_segments(path))
        if node is None or node.kind in _SERVICE_ACCOUNT_ENDPOINTS:
            return None
        return copy.deepcopy(node.value)

    # -- changing (GceEmulator.set/delete and the scenarios) --------------------------------

    def set(self, path: str, value: object) -> None:
        """Create or replace the node at ``path``; a mapping is a subtree in the recursive
        (camelCase) form. Directories on the way are created."""
        segments = _segments(path)
        if not segments:
            raise ValueError("the root cannot be replaced: set its children")
        # A mapping set as ``attributes`` or ``service-accounts`` holds names, not fields.
        named = json_key(segments[-1]) in _NAMED_CHILDREN
        parsed = _parse(value, "<set>", "/" + "/".join(segments), segments[-1], named=named)
        container, key = self._place(segments, create=True)
        if isinstance(container, list):
            index = int(key)
            if index == len(container):
                container.append(parsed)
            else:
                container[index] = parsed
        else:
            container[key] = parsed

    def delete(self, path: str) -> None:
        """Remove the node at ``path`` (leaf or directory); KeyError if there is none."""
        segments = _segments(path)
        if not segments:
            raise ValueError("the root cannot be deleted")
        container, key = self._place(segments, create=False)
        if isinstance(container, list):
            del container[int(key)]
        else:
            del container[key]

    def _place(
        self, segments: list[str], *, create: bool
    ) -> tuple[dict[str, Value] | list[Value], str]:
        """The container and key (or list index) where ``segments`` lives. Missing: KeyError,
        or with ``create`` the directories on the way are made (a list only grows at its end)."""
        container: dict[str, Value] | list[Value] = self._root
        named = False
        for depth, segment in enumerate(segments):
            last = depth == len(segments) - 1
            where = "/".join(segments[: depth + 1])
            key = _key_in(container, segment, named)
            if key is None and create and isinstance(container, list):
                if not (last and segment == str(len(container))):
                    raise ValueError(f"{where}: a list only grows by its next index")
                return container, segment
            if key is None and not create:
                raise KeyError(where)
            if key is None:
                key = segment if named else json_key(segment)
                if last:
                    return container, key
                assert isinstance(container, dict)
                container[key] = {}
            if last:
                return container, key
            child = container[int(key)] if isinstance(container, list) else container[key]
            if not isinstance(child, dict | list):
                raise (ValueError if create else KeyError)(f"{where} is a leaf, not a directory")
            named = isinstance(container, dict) and key in _NAMED_CHILDREN
            container = child
        raise AssertionError("unreachable: segments is never empty here")


def load_gce_document(path: str | os.PathLike[str]) -> GceDocument:
    """Read and validate a GCE document file (the recursive JSON form)."""
    name, text = read_document_file(path)
    return GceDocument.from_json(text, source=name)


# -- tree helpers ---------------------------------------------------------------------------


def _children(node: GceNode) -> list[tuple[str, GceNode]]:
    """``(path name, node)`` of a directory's entries in listing order."""
    value = node.value
    found: list[tuple[str, GceNode]] = []
    if isinstance(value, list):
        for index, item in enumerate(value):
            kind: Kind = "directory" if is_directory(node.key, item) else "leaf"
            found.append((str(index), GceNode(kind, item, str(index), named_children=False)))
        return found
    if not isinstance(value, dict):
        return found
    for key, item in value.items():
        name = key if node.named_children else path_name(key)
        kind = "directory" if is_directory(key, item) else "leaf"
        account = key if node.key == "serviceAccounts" and kind == "directory" else None
        child = GceNode(kind, item, key, named_children=key in _NAMED_CHILDREN, account=account)
        found.append((name, child))
    return sorted(found, key=lambda entry: entry[0])


def _is_account(node: GceNode) -> bool:
    """A service account's own directory (``default/``): it also lists identity and token."""
    return node.kind == "directory" and node.account is not None


def _account_endpoint(parent: GceNode, segment: str) -> GceNode | None:
    if segment not in _SERVICE_ACCOUNT_ENDPOINTS or not _is_account(parent):
        return None
    kind: Kind = "token" if segment == "token" else "identity"
    return GceNode(kind, "", segment, named_children=False, account=parent.account)


def _text_lines(node: GceNode, prefix: str) -> Iterator[tuple[str, str]]:
    for name, child in _children(node):
        if child.kind == "directory":
            yield from _text_lines(child, f"{prefix}{name}/")
        elif isinstance(child.value, list):
            for item in child.value:
                yield prefix + name, str(item)
        else:
            yield prefix + name, str(child.value)


def _key_in(container: dict[str, Value] | list[Value], segment: str, named: bool) -> str | None:
    if isinstance(container, list):
        ok = segment.isdigit() and str(int(segment)) == segment and int(segment) < len(container)
        return segment if ok else None
    for key in container:
        if (key if named else path_name(key)) == segment:
            return key
    return None


def _segments(path: str) -> list[str]:
    stripped = path.strip("/")
    segments = stripped.split("/") if stripped else []
    if "" in segments:
        raise ValueError(f"empty path segment in {path!r}")
    return segments


def _parse(value: object, source: str, pointer: str, key: str, *, named: bool) -> Value:
    """A JSON-ready copy of ``value``, checked: strings, whole numbers, lists, objects."""

    def fail(problem: str) -> DocumentError:
        return DocumentError(f"{source}: {pointer or 'document root'}: {problem}")

    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise fail("GCE values are text: these bytes are not UTF-8") from None
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, float):
        raise fail(f"expected a string, a whole number, a list or an object, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        result: dict[str, Value] = {}
        names: set[str] = set()
        for child_key, child in value.items():
            if not isinstance(child_key, str) or not child_key:
                raise fail("empty key")
            if "/" in child_key or "\n" in child_key or "\r" in child_key:
                raise fail(f"key {child_key!r} contains '/' or a line break")
            name = child_key if named else path_name(child_key)
            if name in names:
                raise fail(f"two keys are both named {name!r} in paths")
            names.add(name)
            escaped = child_key.replace("~", "~0").replace("/", "~1")
            result[child_key] = _parse(
                child, source, f"{pointer}/{escaped}", child_key, named=child_key in _NAMED_CHILDREN
            )
        return result
    if isinstance(value, list | tuple):
        items = [
            _parse(item, source, f"{pointer}/{index}", key, named=False)
            for index, item in enumerate(value)
        ]
        if any(isinstance(item, list) for item in items):
            raise fail("a list cannot hold lists")
        if len({isinstance(item, dict) for item in items}) > 1:
            raise fail("a list holds either objects or plain values, not both")
        return items
    raise fail(
        f"expected a string, a whole number, a list or an object, got {type(value).__name__}"
    )
