"""Azure's instance document: the JSON ``/metadata/instance`` returns, and how paths walk it.

Unlike EC2's tree, Azure's metadata is one JSON document; a request path after
``/metadata/instance`` walks it by object key and array index, and a leaf comes back as text
only with ``format=text``. This module knows that document: loading and validating it, the
fields each api-version shows, walking a path, the text a leaf renders as, and changing it.
It does no I/O besides loading and holds no lock (``AzureInstance`` does).

Rendering primitives as text: the real service sends only strings (``"All primitives will be
of type string"``, with ``""`` for missing values), so ``format=text`` is a string's UTF-8
bytes, with nothing added (no newline). A document given to the emulator may still hold other
JSON primitives; they render as their JSON text: ``5``, ``1.5``, ``true``, ``false``, and
``null`` as the empty string. That choice is ours; ``leaf_text`` (from ``imdsfs._azure_tree``,
which the provider reads the document with too) applies it.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Iterator
from importlib import resources
from typing import TypeAlias

from .._azure_tree import leaf_text
from .._document import read_document_file
from .._errors import DocumentError

__all__ = [
    "API_VERSIONS",
    "NEWEST_VERSIONS",
    "Json",
    "at_version",
    "default_azure_document",
    "delete_path",
    "every_leaf",
    "is_leaf",
    "leaf_text",
    "load_azure_document",
    "set_path",
    "split_path",
    "walk",
]

Json: TypeAlias = "dict[str, Json] | list[Json] | str | int | float | bool | None"

# Every api-version the instance endpoints accept, oldest first (the IMDS article's list).
API_VERSIONS: tuple[str, ...] = (
    "2017-03-01",
    "2017-04-02",
    "2017-08-01",
    "2017-10-01",
    "2017-12-01",
    "2018-02-01",
    "2018-04-02",
    "2018-10-01",
    "2019-02-01",
    "2019-03-11",
    "2019-04-30",
    "2019-06-01",
    "2019-06-04",
    "2019-08-01",
    "2019-08-15",
    "2019-11-01",
    "2020-06-01",
    "2020-07-15",
    "2020-09-01",
    "2020-10-01",
    "2020-12-01",
    "2021-01-01",
    "2021-02-01",
    "2021-03-01",
    "2021-05-01",
    "2021-08-01",
    "2021-10-01",
    "2021-11-01",
    "2021-11-15",
    "2021-12-13",
    "2023-07-01",
    "2023-11-15",
    "2024-03-15",
    "2024-07-17",
    "2025-04-07",
)
# What a 400 for a missing or unsupported api-version lists: the newest three, newest first.
NEWEST_VERSIONS: tuple[str, ...] = tuple(reversed(API_VERSIONS[-3:]))

# The api-version that introduced each field (the article's schema tables). `*` stands for
# any array index. Fields not listed have been there since the first version.
_INTRODUCED: dict[str, str] = {
    "compute/azEnvironment": "2018-10-01",
    "compute/additionalCapabilities": "2021-11-01",
    "compute/customData": "2019-02-01",
    "compute/evictionPolicy": "2020-12-01",
    "compute/extendedLocation": "2021-03-01",
    "compute/host": "2021-11-15",
    "compute/hostGroup": "2021-11-15",
    "compute/isHostCompatibilityLayerVm": "2020-06-01",
    "compute/licenseType": "2020-09-01",
    "compute/osProfile": "2020-07-15",
    "compute/osProfile/disablePasswordAuthentication": "2020-10-01",
    "compute/physicalZone": "2023-11-15",
    "compute/placementGroupId": "2017-08-01",
    "compute/plan": "2018-04-02",
    "compute/platformSubFaultDomain": "2021-10-01",
    "compute/priority": "2020-12-01",
    "compute/provider": "2018-10-01",
    "compute/publicKeys": "2018-04-02",
    "compute/resourceGroupName": "2017-08-01",
    "compute/resourceId": "2019-03-11",
    "compute/securityProfile": "2020-06-01",
    "compute/securityProfile/encryptionAtHost": "2021-11-01",
    "compute/securityProfile/securityType": "2021-12-13",
    "compute/storageProfile": "2019-06-01",
    "compute/storageProfile/dataDisks/*/bytesPerSecondThrottle": "2021-05-01",
    "compute/storageProfile/dataDisks/*/diskCapacityBytes": "2021-05-01",
    "compute/storageProfile/dataDisks/*/isSharedDisk": "2021-05-01",
    "compute/storageProfile/dataDisks/*/isUltraDisk": "2021-05-01",
    "compute/storageProfile/dataDisks/*/opsPerSecondThrottle": "2021-05-01",
    "compute/storageProfile/imageReference/communityGalleryImageId": "2023-07-01",
    "compute/storageProfile/imageReference/sharedGalleryImageId": "2023-07-01",
    "compute/storageProfile/imageReference/exactVersion": "2023-07-01",
    "compute/storageProfile/osDisk/encryptionSettings/diskEncryptionKey": "2021-11-01",
    "compute/storageProfile/osDisk/encryptionSettings/keyEncryptionKey": "2021-11-01",
    "compute/storageProfile/resourceDisk": "2021-02-01",
    "compute/subscriptionId": "2017-08-01",
    "compute/tags": "2017-08-01",
    "compute/tagsList": "2019-06-04",
    "compute/userData": "2021-01-01",
    "compute/virtualMachineScaleSet": "2021-03-01",
    "compute/vmScaleSetName": "2017-12-01",
    "compute/zone": "2017-12-01",
}


def default_azure_document() -> dict[str, Json]:
    """A fresh copy of the packaged instance (``azure-instance.json``)."""
    text = resources.files(__package__).joinpath("azure-instance.json").read_bytes()
    return parse_azure_document(text, "azure-instance.json")


def load_azure_document(path: str | os.PathLike[str]) -> dict[str, Json]:
    """Read and check an instance document file; DocumentError naming the problem."""
    name, text = read_document_file(path)
    return parse_azure_document(text, name)


def parse_azure_document(text: bytes, source: str) -> dict[str, Json]:
    """The document as ``/metadata/instance`` serves it: an object with ``compute`` and
    ``network`` objects. Only JSON may be in it (no NaN or infinity)."""

    def no_constant(name: str) -> None:
        raise DocumentError(f"{source}: {name} is not JSON")

    try:
        data = json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as error:
        raise DocumentError(f"{source}: not valid JSON: {error}") from None
    except UnicodeDecodeError as error:
        raise DocumentError(f"{source}: not UTF-8: {error}") from None
    if not isinstance(data, dict):
        raise DocumentError(f"{source}: document root: expected an object")
    for key in ("compute", "network"):
        if not isinstance(data.get(key), dict):
            raise DocumentError(f"{source}: /{key}: expected an object")
    return data


def at_version(document: Json, version: str, prefix: str = "") -> Json:
    """A copy of ``document`` (found at ``prefix``) without the fields ``version`` lacks."""
    if isinstance(document, dict):
        kept: dict[str, Json] = {}
        for key, value in document.items():
            path = f"{prefix}{key}"
            introduced = _INTRODUCED.get(path)
            if introduced is None or introduced <= version:
                kept[key] = at_version(value, version, path + "/")
        return kept
    if isinstance(document, list):
        return [at_version(item, version, prefix + "*/") for item in document]
    return document


def split_path(path: str) -> list[str] | None:
    """Path segments after the endpoint; a trailing slash is allowed, an empty segment is not."""
    trimmed = path.strip("/")
    if trimmed == "":
        return []
    segments = trimmed.split("/")
    return None if "" in segments else segments


def walk(document: Json, segments: list[str]) -> tuple[bool, Json]:
    """``(found, node)``: object members by key (case matters), array items by index."""
    node = document
    for segment in segments:
        if isinstance(node, dict) and segment in node:
            node = node[segment]
        elif isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
            node = node[int(segment)]
        else:
            return False, None
    return True, node


def is_leaf(node: Json) -> bool:
    return not isinstance(node, dict | list)


def every_leaf(document: Json, prefix: str = "") -> Iterator[tuple[str, bytes]]:
    """``(path, text)`` of every leaf, paths as a request names them (``network/interface/0/
    macAddress``). Empty objects and arrays have no leaves."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield from every_leaf(value, f"{prefix}{key}/")
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from every_leaf(value, f"{prefix}{index}/")
    else:
        yield prefix.removesuffix("/"), leaf_text(document)


def set_path(document: dict[str, Json], path: str, value: Json) -> None:
    """Create or replace the node at ``path``; missing objects on the way are created.
    An array index may replace an item or append one (index == length)."""
    _check_json(value, path)
    segments = _mutable(path)
    parent: Json = document
    for depth, segment in enumerate(segments[:-1]):
        found, child = walk(parent, [segment])
        if not found:
            if not isinstance(parent, dict):
                raise KeyError("/".join(segments[: depth + 1]))
            child = parent[segment] = {}
        if is_leaf(child):
            raise ValueError(f"{'/'.join(segments[: depth + 1])} is a leaf, not an object")
        parent = child
    last = segments[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list) and last.isdigit() and int(last) <= len(parent):
        if int(last) == len(parent):
            parent.append(copy.deepcopy(value))
        else:
            parent[int(last)] = copy.deepcopy(value)
    else:
        raise KeyError(path)


def delete_path(document: dict[str, Json], path: str) -> None:
    """Remove the node at ``path`` (a member, or an array item: later items move up)."""
    segments = _mutable(path)
    found, parent = walk(document, segments[:-1])
    last = segments[-1]
    if found and isinstance(parent, dict) and last in parent:
        del parent[last]
    elif found and isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise KeyError(path)


def _mutable(path: str) -> list[str]:
    segments = split_path(path)
    if not segments or segments[0] not in ("compute", "network"):
        raise ValueError(f"path must start with compute/ or network/: {path!r}")
    if len(segments) == 1:
        raise ValueError(f"{segments[0]} cannot be replaced or deleted as a whole")
    return segments


def _check_json(value: object, path: str) -> None:
    """Only what JSON can carry may enter the document."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: object keys must be strings")
            _check_json(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}/{index}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path}: {value} is not JSON")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise TypeError(f"{path}: {type(value).__name__} is not JSON")
