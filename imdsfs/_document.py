"""The instance document: a whole metadata tree in one JSON file, and how it is read.

Snapshots (``imdsfs dump``, ``mount --from-snapshot``) and the emulator share this format;
it belongs to the core, and the emulator imports it. The document is ours, not AWS's: a
JSON object with ``meta-data`` (required), ``dynamic`` and ``user-data``. Objects are
directories (key order is listing order), strings are leaves
served as their UTF-8 bytes, and ``{"$base64": "..."}`` is a leaf of raw bytes (binary
user-data). Validation happens once, on load, so the server never meets a malformed tree;
every problem is reported with the JSON Pointer (RFC 6901) of the offending place.

This module also knows the read rules that are about the tree rather than about HTTP:
listings (``"\\n".join``, sub-directories end in ``/``, no trailing newline), the
``public-keys`` ``N=name`` quirk, leaves tolerating a trailing slash, and the version list.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from ._errors import DocumentError

__all__ = [
    "VERSIONS",
    "DocumentError",
    "InstanceDocument",
    "decode_leaf",
    "encode_leaf",
    "load_document",
    "read_document_file",
]

Node: TypeAlias = "bytes | dict[str, Node]"
Tree: TypeAlias = dict[str, Node]

# The metadata versions a recent Nitro instance lists at `GET /` , oldest first.
VERSIONS: tuple[str, ...] = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "2021-07-15",
    "2022-09-24",
    "2024-04-11",
    "latest",
)

# `GET /latest`: no trailing slashes although two entries are directories, and `user-data`
# is listed even when the instance has none .
TOP_LEVEL = ("dynamic", "meta-data", "user-data")
LATEST_LISTING = "\n".join(TOP_LEVEL).encode()

# `0=my-key` under public-keys: listed under that name, reachable as `0/`.
_INDEXED_NAME = re.compile(r"(\d+)=.+", re.DOTALL)
_BASE64_KEY = "$base64"


@dataclass(frozen=True)
class _Place:
    """Where the validator is in the JSON, for error messages."""

    source: str
    pointer: str

    def child(self, key: str) -> _Place:
        escaped = key.replace("~", "~0").replace("/", "~1")
        # Keep the message on one line: show control characters as escapes (\n).
        printable = "".join(c if c.isprintable() else repr(c)[1:-1] for c in escaped)
        return _Place(self.source, f"{self.pointer}/{printable}")

    def error(self, problem: str) -> DocumentError:
        where = self.pointer or "document root"
        return DocumentError(f"{self.source}: {where}: {problem}")


class InstanceDocument:
    """A validated instance document. Not thread-safe: the emulator guards it with a lock."""

    def __init__(self, root: Tree) -> None:
        # Private: use from_dict/from_json/load_document, which validate.
        self._root = root

    @classmethod
    def from_dict(cls, data: Mapping[str, object], source: str = "<dict>") -> InstanceDocument:
        """Validate a parsed JSON document; raise DocumentError naming the bad place."""
        return cls(_parse_root(data, _Place(source, "")))

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<string>") -> InstanceDocument:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DocumentError(f"{source}: not valid JSON: {error}") from None
        except UnicodeDecodeError as error:
            raise DocumentError(f"{source}: not UTF-8: {error}") from None
        if not isinstance(data, dict):
            raise _Place(source, "").error(f"expected an object, got {_json_type(data)}")
        return cls.from_dict(data, source)

    def copy(self) -> InstanceDocument:
        return InstanceDocument(copy.deepcopy(self._root))

    def to_dict(self) -> dict[str, object]:
        """The document as JSON-ready data (the inverse of from_dict)."""
        return {key: encode_leaf(node) for key, node in self._root.items()}

    # -- reading, with the rules a GET follows -------------------------------------------

    def read(self, path: str) -> bytes | None:
        """What a GET of ``/latest/<path>`` returns, or None for a 404.

        A directory gives its listing, with or without a trailing slash; a leaf gives its
        bytes, also when asked with a trailing slash (SDKs ask for ``user-data/``); a path
        below a leaf is a 404, as on Nitro.
        """
        if path.strip("/") == "":
            return LATEST_LISTING
        segments = _split(path.removesuffix("/"))
        if segments is None:
            return None
        node = self._walk(segments, by_listed_name=False)
        if node is None:
            return None
        return node if isinstance(node, bytes) else _listing(node)

    # -- mutation (Emulator.set/delete and the scenarios) ---------------------------------

    def set(self, path: str, value: str | bytes | Mapping[str, object]) -> None:
        """Create or replace the node at ``path``, creating directories on the way."""
        segments = self._mutable_path(path)
        node = self._parse_value(value, segments)
        if segments == ["user-data"] and isinstance(node, dict):
            raise ValueError("user-data is a leaf: give it a str or bytes")
        parent: Tree = self._root
        for depth, segment in enumerate(segments[:-1]):
            key = _find_key(parent, segment, by_listed_name=True)
            if key is None:
                key = segment
                _insert(parent, key, {})
            child = parent[key]
            if isinstance(child, bytes):
                raise ValueError(f"{'/'.join(segments[: depth + 1])} is a leaf, not a directory")
            parent = child
        key = _find_key(parent, segments[-1], by_listed_name=True)
        if key is None:
            _insert(parent, segments[-1], node)
        else:
            parent[key] = node

    def delete(self, path: str) -> None:
        """Remove the node at ``path``; KeyError if there is none."""
        segments = self._mutable_path(path)
        parent = self._walk(segments[:-1], by_listed_name=True)
        key = None if not isinstance(parent, dict) else _find_key(parent, segments[-1], True)
        if parent is None or isinstance(parent, bytes) or key is None:
            raise KeyError(path)
        del parent[key]

    def leaves(self, path: str) -> Iterator[tuple[str, bytes]]:
        """``(path, bytes)`` of the leaves directly under the directory at ``path``."""
        segments = _split(path.strip("/")) or []
        node = self._walk(segments, by_listed_name=True)
        if isinstance(node, dict):
            for key, child in list(node.items()):
                if isinstance(child, bytes):
                    yield f"{path.strip('/')}/{key}", child

    def every_leaf(self) -> Iterator[tuple[str, bytes]]:
        """``(path, bytes)`` of every leaf, paths as a GET would name them (``N=name``
        directories by their index)."""

        def walk(prefix: str, node: Node) -> Iterator[tuple[str, bytes]]:
            if isinstance(node, bytes):
                yield prefix.removesuffix("/"), node
                return
            for key, child in node.items():
                segment = key.split("=", 1)[0] if _is_indexed_dir(key, child) else key
                yield from walk(f"{prefix}{segment}/", child)

        for key, node in self._root.items():
            yield from walk(f"{key}/", node)

    def _walk(self, segments: list[str], *, by_listed_name: bool) -> Node | None:
        node: Node = self._root
        for segment in segments:
            if isinstance(node, bytes):
                return None
            key = _find_key(node, segment, by_listed_name)
            if key is None:
                return None
            node = node[key]
        return node

    def _mutable_path(self, path: str) -> list[str]:
        segments = _split(path.strip("/"))
        if not segments or segments[0] not in TOP_LEVEL:
            raise ValueError(f"path must start with one of {', '.join(TOP_LEVEL)}: {path!r}")
        if len(segments) == 1 and segments[0] != "user-data":
            raise ValueError(f"{segments[0]} cannot be replaced or deleted as a whole")
        return segments

    def _parse_value(self, value: str | bytes | Mapping[str, object], at: list[str]) -> Node:
        if isinstance(value, bytes):
            return value
        return _parse_node(value, _Place("<set>", "/" + "/".join(at)))


def load_document(path: str | os.PathLike[str]) -> InstanceDocument:
    """Read and validate an instance document file; DocumentError on any problem."""
    name, text = read_document_file(path)
    return InstanceDocument.from_json(text, source=name)


def read_document_file(path: str | os.PathLike[str]) -> tuple[str, bytes]:
    """A document file's name (for messages) and bytes; DocumentError if it cannot be read.
    Every cloud's document loader reads its file this way."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            return name, file.read()
    except OSError as error:
        raise DocumentError(f"{name}: cannot read: {error.strerror}") from None


# -- tree helpers ---------------------------------------------------------------------------


def _split(path: str) -> list[str] | None:
    """Path segments, or None when a segment is empty (``a//b``), which nothing matches."""
    if path == "":
        return []
    segments = path.split("/")
    return None if "" in segments else segments


def _listing(directory: Tree) -> bytes:
    return "\n".join(_listed_name(key, node) for key, node in directory.items()).encode()


def _listed_name(key: str, node: Node) -> str:
    if isinstance(node, bytes) or _INDEXED_NAME.fullmatch(key):
        return key
    return key + "/"


def _find_key(directory: Tree, segment: str, by_listed_name: bool) -> str | None:
    """The key a path segment designates.

    An ``N=name`` directory is reached by its index ``N``; over HTTP not by its listed name
    (real IMDS gives 404 for ``public-keys/0=my-key/``), but the Python API accepts both.
    """
    node = directory.get(segment)
    if node is not None and (by_listed_name or not _is_indexed_dir(segment, node)):
        return segment
    if segment.isdigit():
        for key, child in directory.items():
            if _is_indexed_dir(key, child) and key.split("=", 1)[0] == segment:
                return key
    return None


def _is_indexed_dir(key: str, node: Node) -> bool:
    return isinstance(node, dict) and _INDEXED_NAME.fullmatch(key) is not None


def _insert(directory: Tree, key: str, node: Node) -> None:
    """Add a new key before the first key that sorts after it: sorted listings stay sorted
    (real listings are alphabetical, and `spot/` must appear where IMDS shows it)."""
    items = list(directory.items())
    position = next((i for i, (k, _) in enumerate(items) if k > key), len(items))
    items.insert(position, (key, node))
    directory.clear()
    directory.update(items)


# -- validation -----------------------------------------------------------------------------


def _parse_root(data: Mapping[str, object], place: _Place) -> Tree:
    unknown = [key for key in data if key not in TOP_LEVEL]
    if unknown:
        allowed = ", ".join(f'"{key}"' for key in TOP_LEVEL)
        raise place.child(unknown[0]).error(f"unknown top-level key (allowed: {allowed})")
    if "meta-data" not in data:
        raise place.error('missing "meta-data"')
    root: Tree = {}
    for key in TOP_LEVEL:
        if key not in data:
            continue
        node = _parse_node(data[key], place.child(key))
        if key == "user-data" and isinstance(node, dict):
            raise place.child(key).error('expected a string or {"$base64": ...}, got an object')
        if key != "user-data" and isinstance(node, bytes):
            raise place.child(key).error(f"expected an object, got {_json_type(data[key])}")
        root[key] = node
    return root


def _parse_node(value: object, place: _Place) -> Node:
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, Mapping):
        expected = 'a string, an object or {"$base64": ...}'
        raise place.error(f"expected {expected}, got {_json_type(value)}")
    if _BASE64_KEY in value:
        return _parse_base64(value, place)
    directory: Tree = {}
    indexes: set[str] = set()
    for key, child in value.items():
        _check_key(key, place)
        node = _parse_node(child, place.child(key))
        if _is_indexed_dir(key, node):
            index = key.split("=", 1)[0]
            if index in indexes:
                raise place.child(key).error(f"index {index} is used twice")
            indexes.add(index)
        directory[key] = node
    return directory


def _parse_base64(value: Mapping[object, object], place: _Place) -> bytes:
    if len(value) != 1:
        raise place.error('a {"$base64": ...} leaf must have no other keys')
    encoded = value[_BASE64_KEY]
    if not isinstance(encoded, str):
        raise place.child(_BASE64_KEY).error(f"expected a string, got {_json_type(encoded)}")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as error:
        raise place.child(_BASE64_KEY).error(f"bad base64: {error}") from None


def _check_key(key: object, place: _Place) -> None:
    if not isinstance(key, str) or key == "":
        raise place.error("empty key")
    if "/" in key:
        raise place.child(key).error('key contains "/"')
    if "\n" in key or "\r" in key:
        raise place.child(key).error("key contains a line break (it would break the listing)")


def decode_leaf(value: object) -> bytes:
    """The bytes `encode_leaf` wrote for a leaf; DocumentError if *value* is neither form."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, Mapping) and set(value) == {_BASE64_KEY}:
        return _parse_base64(value, _Place("snapshot", ""))
    raise DocumentError('expected a string or {"$base64": ...}')


def encode_leaf(node: Node) -> object:
    """A node as JSON-ready data: leaves are strings when they are UTF-8 (JSON carries any such
    text exactly), else ``{"$base64": ...}``; directories are objects of those."""
    if isinstance(node, dict):
        return {key: encode_leaf(child) for key, child in node.items()}
    try:
        return node.decode()
    except UnicodeDecodeError:
        return {_BASE64_KEY: base64.b64encode(node).decode()}


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, bool):
        return names[bool]
    if isinstance(value, int | float):
        return "a number"
    return names.get(type(value), type(value).__name__)
