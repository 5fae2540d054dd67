"""Snapshots: the whole metadata tree in one file, and a mount served from such a file.

``imdsfs dump`` crawls IMDS and writes the emulator's *instance document* format (see the
README, "Instance document"): directories are objects in listing order, leaves are strings
when they are UTF-8 and ``{"$base64": ...}`` otherwise, so any bytes survive. The same file
feeds ``imdsfs emulate --instance`` and ``imdsfs mount --from-snapshot``.

``--from-snapshot`` swaps the network for `SnapshotTransport`, an in-process httpx transport
that answers from the document (`FilesTransport` for other clouds' snapshots, and for an
OpenStack config drive, ``--from-config-drive``, read as one). Everything above the
transport (tokens, retries, the cache, statistics, the filesystem) is the code that runs
against real IMDS, so an offline mount behaves like a live one; and no port is opened, so
the credentials in the file stay behind the mount's file modes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import urllib.parse
from collections.abc import Mapping

import httpx
import trio

from ._cache import MetadataCache
from ._client import ImdsClient
from ._config_drive import read_config_drive
from ._document import InstanceDocument, decode_leaf, encode_leaf, load_document
from ._errors import ConfigError, DocumentError, NotFound
from ._paths import MAX_NODES
from ._provider import NodeKind, Provider
from ._settings import ClientConfig
from ._ttl import TtlPolicy

__all__ = [
    "SNAPSHOT_ENDPOINT",
    "FilesTransport",
    "SnapshotTransport",
    "crawl",
    "crawl_files",
    "dump",
    "open_config_drive",
    "open_snapshot",
]

log = logging.getLogger(__name__)

# What a snapshot mount reports as its endpoint (logs, user.imds.url). `.invalid` never
# resolves (RFC 2606), so even a wiring mistake could not send a request anywhere.
SNAPSHOT_ENDPOINT = "http://snapshot.invalid"

Document = dict[str, object]


# -- dump ------------------------------------------------------------------------------------


def dump(config: ClientConfig, output: str | None, *, omit_secrets: bool = False) -> int:
    """Crawl the service and write the document to *output* (a file, mode 0600) or stdout."""
    document = trio.run(_crawl_with_new_client, config, omit_secrets)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.buffer.write(text.encode())
        sys.stdout.buffer.flush()
    else:
        _write_private(output, text.encode())
    return 0


async def _crawl_with_new_client(config: ClientConfig, omit_secrets: bool) -> Document:
    async with ImdsClient(config) as client:
        if client.provider.name == "ec2":  # the instance document, which the emulator loads
            return await crawl(client, omit_secrets=omit_secrets)
        return await crawl_files(client, omit_secrets=omit_secrets)


async def crawl_files(client: ImdsClient, *, omit_secrets: bool = False) -> Document:
    """Any provider's tree as ``{"provider": NAME, "files": {mount path: bytes}}``, listings
    (``dir/``) and the root's extras (OpenStack's ``openstack/`` and ``user-data``) included:
    what a snapshot mount serves back, path for path. Read through a cache, as a mount
    reads, so a provider's one-request reads (GCE's subtrees, Azure's whole document) serve
    every path they hold."""
    files: dict[str, object] = {}
    crawler = _Crawler(client, omit_secrets)
    cache = MetadataCache(client, TtlPolicy(builtin=client.provider.ttl_rules), holdoff=0)

    async def walk(path: str) -> None:
        try:
            body = (await cache.get(path)).body
        except NotFound:
            return
        files[path] = encode_leaf(body)
        if not path or path.endswith("/"):
            listing = client.provider.parse_listing(body, path, limit=MAX_NODES)
            async with trio.open_nursery() as nursery:
                for entry in listing.entries:
                    if entry.kind is not NodeKind.SYMLINK and not crawler.skips(entry.path):
                        nursery.start_soon(walk, entry.path)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(walk, "")
        for extra in client.provider.root_extras:
            if not crawler.skips(extra.path):
                nursery.start_soon(walk, extra.path)
    return {"provider": client.provider.name, "files": dict(sorted(files.items()))}


async def crawl(client: ImdsClient, *, omit_secrets: bool = False) -> Document:
    """The whole tree as an instance document, checked to load back as one.

    Requests run concurrently; the client bounds how many are in flight. A path listed but
    gone by the time it is read (404) is left out; any other failure fails the dump, since a
    snapshot silently missing a subtree would be worse than none. With *omit_secrets*, the
    files the mount keeps root-only (credentials, user-data) are neither fetched nor written,
    so the snapshot can be shared. The document's top level is the mount root (as
    ``meta-data``) and the entries the provider adds to it (EC2: ``dynamic``, ``user-data``).
    """
    crawler = _Crawler(client, omit_secrets)
    document: Document = {"meta-data": await crawler.directory("")}
    for extra in client.provider.root_extras:
        if crawler.skips(extra.path):
            continue
        try:
            if extra.kind is NodeKind.DIRECTORY:
                document[extra.name] = await crawler.directory(extra.path)
            else:
                document[extra.name] = encode_leaf((await client.get(extra.path)).body)
        except NotFound:  # an instance launched without user data, say
            log.info("the service has no %s", extra.path)
    try:  # and in the document's own order of keys
        return InstanceDocument.from_dict(document, source="the dump").to_dict()
    except DocumentError as exc:
        raise ConfigError(f"the service served a tree a snapshot cannot hold: {exc}") from None


class _Crawler:
    def __init__(self, client: ImdsClient, omit_secrets: bool) -> None:
        self._client = client
        self._provider = client.provider
        self._omit_secrets = omit_secrets

    def skips(self, path: str) -> bool:
        return self._omit_secrets and self._provider.secrets.is_secret(path)

    async def directory(self, path: str) -> Document:
        """Keys are the listed names (``0=my-key`` included), so the document lists what the
        service listed. Which names are usable is the mount's own rule (the provider's
        `parse_listing`): a name the mount would skip is left out of the snapshot too."""
        body = (await self._client.get(path)).body
        listing = self._provider.parse_listing(body, path, limit=MAX_NODES)
        entries = [
            (entry.listed or entry.name, entry.path)
            for entry in listing.entries
            if entry.kind is not NodeKind.SYMLINK and not self.skips(entry.path)
        ]  # symlinks are the mount's aid for humans, not data
        values: Document = {}

        async def fetch(key: str, child: str) -> None:
            try:
                if child.endswith("/"):
                    values[key] = await self.directory(child)
                else:
                    values[key] = encode_leaf((await self._client.get(child)).body)
            except NotFound:
                log.warning("%s is listed but answers 404; left out", self._provider.where(child))

        async with trio.open_nursery() as nursery:
            for key, child in entries:
                nursery.start_soon(fetch, key, child)
        return {key: values[key] for key, _ in entries if key in values}  # listing order


def _write_private(path: str, data: bytes) -> None:
    """Write atomically, readable by the owner only: a snapshot holds credentials."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".imdsfs-dump-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


# -- serving a snapshot ----------------------------------------------------------------------


def open_snapshot(path: str) -> tuple[str, httpx.AsyncBaseTransport]:
    """The provider a snapshot is of, and a transport serving it; ConfigError with the
    problem's place if the file is bad."""
    try:
        with open(path, "rb") as file:
            data = json.loads(file.read())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"snapshot {path}: {exc}") from None
    log.info("serving the snapshot %s; no metadata service is asked", path)
    if isinstance(data, dict) and "provider" in data and "files" in data:
        return str(data["provider"]), FilesTransport(_decoded(data["files"], path))
    try:
        document = load_document(path)
    except DocumentError as exc:
        raise ConfigError(f"snapshot {exc}") from None
    return "ec2", SnapshotTransport(document)


def open_config_drive(path: str, max_body: int) -> tuple[str, FilesTransport]:
    """An OpenStack config drive's directory served as a snapshot of ``openstack`` (see
    `_config_drive`); ConfigError if *path* is not one, or holds a file over *max_body*."""
    transport = FilesTransport(read_config_drive(path, max_body=max_body))
    log.info("serving the config drive %s; no metadata service is asked", path)
    return "openstack", transport


def _decoded(files: object, source: str) -> dict[str, bytes]:
    """A snapshot's ``"files"``, each value back to its bytes."""
    if not isinstance(files, dict):
        raise ConfigError(f'snapshot {source}: "files" must be an object')
    decoded: dict[str, bytes] = {}
    for name, value in files.items():
        try:
            decoded[str(name)] = decode_leaf(value)
        except DocumentError as exc:
            raise ConfigError(f"snapshot {source}: {name}: {exc}") from None
    return decoded


class FilesTransport(httpx.AsyncBaseTransport):
    """Answers any provider's GETs from ``{mount path: bytes}`` (a snapshot, a config drive):
    each file at the URL path its provider asks for it (`serve_for`); anything else is a 404."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._files = dict(files)
        self._by_url: dict[str, bytes] = {}

    def serve_for(self, provider: Provider) -> None:
        """Serve each file where *provider* looks for it: ``instance/zone`` at
        ``/computeMetadata/v1/instance/zone``, ``openstack/user_data`` at
        ``/openstack/latest/user_data``."""
        self._by_url = {
            urllib.parse.urlsplit(provider.url(path)).path: body
            for path, body in self._files.items()
        }

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = self._by_url.get(request.url.path)
        return _response(404, b"") if body is None else _response(200, body)


class SnapshotTransport(httpx.AsyncBaseTransport):
    """Answers IMDS requests from an instance document held in memory.

    A token PUT gets a token (the document has no protocol state to protect); a GET under
    ``/latest/`` gets what the emulator would serve for that document (listings, the
    ``public-keys`` quirk) or a 404. The document never changes, so neither does the mount.
    """

    def __init__(self, document: InstanceDocument) -> None:
        self._document = document

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "PUT" and path == "/latest/api/token":
            ttl = request.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "21600")
            headers = {"X-aws-ec2-metadata-token-ttl-seconds": ttl}
            return _response(200, b"snapshot-token", headers)
        body = None
        if request.method == "GET" and path.startswith("/latest/"):
            body = self._document.read(path.removeprefix("/latest/"))
        return _response(404, b"") if body is None else _response(200, body)


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    """A response still to be read, as off the network: the client streams every body."""
    headers = {**(headers or {}), "Content-Length": str(len(body))}
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))
