"""Azure's instance document as files: one set of rules for the provider (which reads the whole
document in one request) and the emulator (which serves it path by path).

``GET /metadata/instance`` returns one JSON document, and a path after it walks the document
by object key and array index (``/metadata/instance/network/interface/0/macAddress``); a
leaf comes back as text only with ``format=text``. As a tree of mount paths:

- an object is a directory of its keys, in the document's order; an array is a directory of
  its indexes ``0``, ``1``, ...; a listing is one name per ``\\n``-terminated line,
  sub-directories with a trailing ``/`` (the shape every provider's listings share);
- any other value is a file holding what ``format=text`` returns for its path (`leaf_text`).

A key that cannot be written as one listing line (holding ``/`` or a line break, or a lone
surrogate, which UTF-8 cannot hold) is left out with what lies below it, and so is a string
leaf with a lone surrogate; other unusable names (``..``, say) are listed, and skipped with
a warning by the tree, as any provider's are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

__all__ = ["expand", "leaf_text"]


def leaf_text(node: object) -> bytes:
    """What ``format=text`` returns for a leaf. The real service sends only strings (``""``
    for missing values): their UTF-8 bytes, nothing added (no newline). A hand-made document
    may hold other JSON primitives: their JSON text (``5``, ``1.5``, ``true``), and ``null``
    nothing. That choice is ours; the emulator serves the same."""
    if isinstance(node, str):
        return node.encode()
    if node is None:
        return b""
    return json.dumps(node).encode()


def expand(document: object, base: str, limit: int | None = None) -> dict[str, bytes]:
    """Every listing and leaf of *document* by mount path, *document* being the directory
    *base* (``instance/``): its listing, and what lies below it. ValueError past *limit*
    paths (a document no mount would show, whose reading would hold every reader), or if
    it is nested too deep to walk."""
    found: dict[str, bytes] = {}
    try:
        _expand(document, base, found, limit)
    except RecursionError:
        raise ValueError("the document is nested too deep") from None
    return found


def _expand(node: object, path: str, found: dict[str, bytes], limit: int | None) -> None:
    names = []
    for name, child in _children(node):
        if isinstance(child, dict | list):
            names.append(name + "/")
            _expand(child, f"{path}{name}/", found, limit)
        elif (text := _text_or_none(child)) is not None:
            names.append(name)
            found[path + name] = text
        if limit is not None and len(found) + len(names) > limit:
            raise ValueError(f"more than {limit} paths in the document")
    found[path] = "".join(name + "\n" for name in names).encode()


def _text_or_none(leaf: object) -> bytes | None:
    """`leaf_text`, or None for a string UTF-8 cannot hold (a lone surrogate, which JSON
    allows and no service sends): that leaf is left out, not the document."""
    try:
        return leaf_text(leaf)
    except UnicodeEncodeError:
        return None


def _children(node: object) -> Iterator[tuple[str, object]]:
    if isinstance(node, list):
        yield from ((str(index), item) for index, item in enumerate(node))
    elif isinstance(node, dict):
        for key, value in node.items():
            if not any(c in key for c in "/\n\r") and _is_utf8(key):
                yield key, value


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
