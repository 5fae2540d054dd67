"""An OpenStack instance as Nova's metadata service sees it, and Nova's lookup rules.

The data: the EC2-compatible tree (an ``InstanceDocument``: ``meta-data`` and ``user-data``,
shared with the OpenStack ``user_data``) plus the OpenStack-format documents
(``meta_data.json`` without its per-request ``random_seed``, ``network_data.json``, the
static vendor data and any dynamic vendor data targets, the admin password).

The rules are a port of ``nova/api/metadata/base.py`` (``InstanceMetadata.lookup``,
``get_ec2_metadata``, ``RouteConfiguration``, ``find_path_in_tree``, ``ec2_md_print``) so
that every quirk a guest can meet is kept: paths are normalised (``posixpath.normpath``,
so trailing slashes and ``..`` are resolved); anything not under ``/openstack`` is the EC2
tree, also reachable as ``/ec2/...``; EC2 fields appear by EC2 version (``latest`` =
2009-04-04); listings are sorted, ``name/`` for a sub-tree, ``0=keyname`` for public keys,
no final newline; ``/latest`` lists ``meta-data/`` and (only when there is some)
``user-data``; one segment below a leaf is Nova's ``TypeError``, a 500 (404 for a security
group that is not one); ``/openstack/<version>`` lists its files (``meta_data.json``,
``user_data``, ``password``, ``vendor_data.json``, ``network_data.json``,
``vendor_data2.json``) as that version has them; ``meta_data.json`` gains a fresh 512-byte
``random_seed`` on every request; ``vendor_data.json`` is the static vendor data and
``vendor_data2.json`` holds it under ``static``.

Decided here: EC2 keys Nova does not know (added with ``set``) are shown in every version;
the EC2 tree keeps strings where Nova has a list (``security-groups``, one per line) or an int
(``ami-launch-index``) and converts them back for the config drive's ``meta-data.json``.
Nova's 15-second answer cache is not emulated: changes show at once.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import posixpath
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .._document import InstanceDocument
from .._errors import DocumentError

__all__ = [
    "EC2_VERSIONS",
    "OPENSTACK_VERSIONS",
    "NovaAnswer",
    "NovaNotFound",
    "NovaServerError",
    "OpenStackInstance",
    "default_openstack_data",
    "load_openstack_data",
]

# nova/api/metadata/base.py: VERSIONS and OPENSTACK_VERSIONS.
EC2_VERSIONS: tuple[str, ...] = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
)
FOLSOM, GRIZZLY, HAVANA, LIBERTY = "2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15"
NEWTON_ONE, NEWTON_TWO, OCATA, ROCKY = "2016-06-30", "2016-10-06", "2017-02-22", "2018-08-27"
VICTORIA, EPOXY = "2020-10-14", "2025-04-04"
OPENSTACK_VERSIONS: tuple[str, ...] = (
    FOLSOM,
    GRIZZLY,
    HAVANA,
    LIBERTY,
    NEWTON_ONE,
    NEWTON_TWO,
    OCATA,
    ROCKY,
    VICTORIA,
    EPOXY,
)
# config_drive_skip_versions' default leaves these EC2 versions on a config drive.
CONFIG_DRIVE_EC2_VERSIONS = ("2009-04-04", "latest")

# get_ec2_metadata's keys, in its dict order, with the EC2 version that added each.
EC2_KEYS: tuple[tuple[str, str], ...] = (
    ("ami-id", "1.0"),
    ("ami-launch-index", "1.0"),
    ("ami-manifest-path", "1.0"),
    ("instance-id", "1.0"),
    ("hostname", "1.0"),
    ("local-ipv4", "1.0"),
    ("reservation-id", "1.0"),
    ("security-groups", "1.0"),
    ("public-keys", "1.0"),
    ("local-hostname", "2007-01-19"),
    ("public-hostname", "2007-01-19"),
    ("public-ipv4", "2007-01-19"),
    ("instance-type", "2007-08-29"),
    ("block-device-mapping", "2007-12-15"),
    ("kernel-id", "2007-12-15"),
    ("ramdisk-id", "2007-12-15"),
    ("placement", "2008-02-01"),
    ("instance-action", "2008-09-01"),
)
# meta_data.json keys that only some OpenStack versions have.
_MD_SINCE = {"project_id": LIBERTY, "devices": NEWTON_ONE, "dedicated_cpus": VICTORIA}
_OS_KEYS = ("meta_data", "network_data", "vendor_data", "dynamic_vendor_data", "password")

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain"
HTML_TYPE = "text/html"  # webob's default: what a handler that returns None leaves


class NovaNotFound(Exception):
    """Nova's ``InvalidMetadataPath`` (or a ``KeyError``): the guest gets a 404."""


class NovaServerError(Exception):
    """An exception Nova does not catch (a ``TypeError`` in its tree walk): a 500."""


@dataclass(frozen=True)
class NovaAnswer:
    """What Nova answers for a path: the body and the mimetype it sets."""

    body: bytes
    mimetype: str = TEXT_TYPE
    password: bool = False  # the password handler: GET only


def default_openstack_data() -> dict[str, Any]:
    """A fresh copy of the packaged instance (``openstack-instance.json``)."""
    text = resources.files(__package__).joinpath("openstack-instance.json").read_bytes()
    return _parse(text, "openstack-instance.json")


def load_openstack_data(path: str | os.PathLike[str]) -> dict[str, Any]:
    name = os.fspath(path)
    try:
        text = Path(name).read_bytes()
    except OSError as error:
        raise DocumentError(f"{name}: cannot read: {error.strerror}") from None
    return _parse(text, name)


def _parse(text: bytes, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DocumentError(f"{source}: not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise DocumentError(f"{source}: document root: expected an object")
    unknown = [key for key in data if key not in ("ec2", *_OS_KEYS)]
    if unknown:
        raise DocumentError(f"{source}: /{unknown[0]}: unknown top-level key")
    for key in ("meta_data", "network_data", "vendor_data", "dynamic_vendor_data"):
        if not isinstance(data.get(key, {}), dict):
            raise DocumentError(f"{source}: /{key}: expected an object")
    if not isinstance(data.get("password", ""), str):
        raise DocumentError(f"{source}: /password: expected a string")
    if "uuid" not in data.get("meta_data", {}):
        raise DocumentError(f'{source}: /meta_data: missing "uuid"')
    ec2 = data.get("ec2")
    if not isinstance(ec2, dict):
        raise DocumentError(f'{source}: missing "ec2" (the EC2-compatible tree)')
    if "dynamic" in ec2:
        raise DocumentError(f"{source}: /ec2/dynamic: Nova has no dynamic category")
    # The EC2 tree is an instance document: same format, same validation, same errors.
    InstanceDocument.from_dict(ec2, source=f"{source}#/ec2")
    return data


class OpenStackInstance:
    """The instance behind one lock; ``lookup`` answers a request path as Nova does."""

    def __init__(self, data: Mapping[str, Any], rng: random.Random) -> None:
        data = copy.deepcopy(dict(data))
        self._ec2 = InstanceDocument.from_dict(data["ec2"], source="<ec2>")
        self._os: dict[str, Any] = {key: data.get(key, {}) for key in _OS_KEYS}
        self._os["password"] = data.get("password", "")
        self._rng = rng
        self._lock = threading.RLock()

    # -- changes ---------------------------------------------------------------------------

    def set(self, path: str, value: Any) -> None:
        """``meta-data/...`` or ``user-data``: the EC2 tree (user data is shared with
        ``user_data``); ``openstack/<file>.json[/key...]``: a document or a key in it;
        ``openstack/password``: the admin password."""
        with self._lock:
            if path.startswith("openstack/"):
                self._set_openstack(path.removeprefix("openstack/"), value, delete=False)
            else:
                self._ec2.set(path, value)

    def delete(self, path: str) -> None:
        with self._lock:
            if path.startswith("openstack/"):
                self._set_openstack(path.removeprefix("openstack/"), None, delete=True)
            else:
                self._ec2.delete(path)

    def _set_openstack(self, path: str, value: Any, *, delete: bool) -> None:
        name, _, rest = path.partition("/")
        key = {
            "meta_data.json": "meta_data",
            "network_data.json": "network_data",
            "vendor_data.json": "vendor_data",
            "password": "password",
        }.get(name)
        if key is None:
            raise KeyError(path)
        if not rest:
            if key == "password":
                self._os[key] = "" if delete else str(value)
            else:
                self._os[key] = {} if delete else copy.deepcopy(value)
            return
        parent = self._os[key]
        *parents, last = rest.split("/")
        for segment in parents:
            parent = parent.setdefault(segment, {}) if not delete else parent[segment]
        if delete:
            del parent[last]
        else:
            parent[last] = copy.deepcopy(value)

    # -- Nova's lookup ---------------------------------------------------------------------

    def lookup(self, path: str) -> NovaAnswer:
        """``InstanceMetadata.lookup`` plus ``ec2_md_print``; NovaNotFound or
        NovaServerError as Nova would fail."""
        if path == "" or path[0] != "/":
            path = "/" + path
        tokens = posixpath.normpath(path).split("/")[1:]
        if tokens[0] not in ("ec2", "openstack"):
            tokens = ["ec2"] if tokens[0] == "" else ["ec2", *tokens]
        with self._lock:
            if len(tokens) == 1:
                versions = OPENSTACK_VERSIONS if tokens[0] == "openstack" else EC2_VERSIONS
                return NovaAnswer(_print([*versions, "latest"]))
            if tokens[0] == "openstack":
                return self._openstack_item(tokens[1:])
            return NovaAnswer(_print(_find(self._ec2_data(tokens[1]), tokens[2:])))

    def ec2_meta_data(self, version: str) -> dict[str, Any]:
        """The meta-data dict Nova builds for ``version`` (its types, its key order)."""
        with self._lock:
            data = self._ec2_data(version)["meta-data"]
        assert isinstance(data, dict)
        return data

    def _ec2_data(self, version: str) -> dict[str, Any]:
        if version == "latest":
            version = EC2_VERSIONS[-1]
        if version not in EC2_VERSIONS:
            raise NovaNotFound(version)
        tree = self._ec2.to_dict()
        stored = tree["meta-data"]
        assert isinstance(stored, dict)
        since = dict(EC2_KEYS)
        meta: dict[str, Any] = {}
        for key in [k for k, _ in EC2_KEYS if k in stored] + [k for k in stored if k not in since]:
            if since.get(key, "1.0") <= version:  # EC2 versions sort as dates ("1.0" first)
                meta[key] = _nova_value(key, stored[key])
        data: dict[str, Any] = {"meta-data": meta}
        user_data = self.user_data()
        if user_data is not None:
            data["user-data"] = user_data
        return data

    def user_data(self) -> bytes | None:
        with self._lock:
            return self._ec2.read("user-data")

    def _openstack_item(self, tokens: list[str]) -> NovaAnswer:
        if tokens[0] == "content":  # injected files: none here
            raise NovaNotFound("/".join(tokens))
        version = EPOXY if tokens[0] == "latest" else tokens[0]
        if version not in OPENSTACK_VERSIONS:
            raise NovaNotFound(tokens[0])
        name = "version" if len(tokens) == 1 else "/".join(tokens[1:])
        if name == "version":
            return NovaAnswer(_print(self._listing(version)))
        if name == "content":  # Nova calls _handle_content with the wrong arguments
            raise NovaServerError(name)
        handler = {
            "meta_data.json": self._meta_data,
            "user_data": self._user_data,
            "password": self._password,
            "vendor_data.json": self._vendor_data,
            "vendor_data2.json": self._vendor_data2,
            "network_data.json": self._network_data,
        }.get(name)
        if handler is None:
            raise NovaNotFound(name)
        return handler(version)

    def _listing(self, version: str) -> list[str]:
        names = ["meta_data.json"]
        if self.user_data() is not None:
            names.append("user_data")
        for name, since in (
            ("password", GRIZZLY),
            ("vendor_data.json", HAVANA),
            ("network_data.json", LIBERTY),
            ("vendor_data2.json", NEWTON_TWO),
        ):
            if _os_at_least(version, since):
                names.append(name)
        return names

    def _meta_data(self, version: str) -> NovaAnswer:
        stored: dict[str, Any] = copy.deepcopy(self._os["meta_data"])
        metadata: dict[str, Any] = {}
        seed_due = _os_at_least(version, GRIZZLY)
        for key, value in stored.items():
            if seed_due and key in _MD_SINCE:
                metadata["random_seed"], seed_due = self._random_seed(), False
            if key in _MD_SINCE and not _os_at_least(version, _MD_SINCE[key]):
                continue
            metadata[key] = _devices(value, version) if key == "devices" else value
        if seed_due:
            metadata["random_seed"] = self._random_seed()
        return NovaAnswer(_dumps(metadata), JSON_TYPE)

    def _random_seed(self) -> str:
        return base64.b64encode(self._rng.randbytes(512)).decode()

    def _user_data(self, version: str) -> NovaAnswer:
        body = self.user_data()
        if body is None:
            raise NovaNotFound("user_data")
        return NovaAnswer(body)

    def _password(self, version: str) -> NovaAnswer:
        if not _os_at_least(version, GRIZZLY):
            raise NovaNotFound("password")
        return NovaAnswer(str(self._os["password"]).encode(), HTML_TYPE, password=True)

    def _vendor_data(self, version: str) -> NovaAnswer:
        if not _os_at_least(version, HAVANA):
            raise NovaNotFound("vendor_data.json")
        return NovaAnswer(_dumps(self._os["vendor_data"]), JSON_TYPE)

    def _vendor_data2(self, version: str) -> NovaAnswer:
        if not _os_at_least(version, NEWTON_TWO):
            raise NovaNotFound("vendor_data2.json")
        combined = {"static": self._os["vendor_data"], **self._os["dynamic_vendor_data"]}
        return NovaAnswer(_dumps(combined), JSON_TYPE)

    def _network_data(self, version: str) -> NovaAnswer:
        return NovaAnswer(_dumps(self._os["network_data"]))  # text/plain, as Nova leaves it

    # -- the config drive --------------------------------------------------------------------

    def config_drive(self, directory: str | os.PathLike[str]) -> list[str]:
        """Write what Nova puts on a config drive (``metadata_for_config_drive``) under
        ``directory``: ``ec2/{2009-04-04,latest}/meta-data.json`` and ``user-data``, and for
        every OpenStack version and ``latest``: ``meta_data.json``, ``user_data``,
        ``vendor_data.json``, ``network_data.json``, ``vendor_data2.json`` as the version has
        them. Returns the paths written, relative to ``directory``."""
        files: dict[str, bytes] = {}
        with self._lock:
            for version in CONFIG_DRIVE_EC2_VERSIONS:
                data = self._ec2_data(version)
                if "user-data" in data:
                    files[f"ec2/{version}/user-data"] = data["user-data"]
                # Nova means to drop public-keys' "_name" here, but its `del` looks in the
                # wrong dict (``data``, not ``data["meta-data"]``): the drive keeps it.
                files[f"ec2/{version}/meta-data.json"] = _dumps(data["meta-data"])
            for version in (*OPENSTACK_VERSIONS, "latest"):
                names = [n for n in self._listing(EPOXY if version == "latest" else version)]
                for name in names:
                    if name != "password":
                        body = self.lookup(f"/openstack/{version}/{name}").body
                        files[f"openstack/{version}/{name}"] = body
        root = Path(directory)
        for relative, body in files.items():
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
        return list(files)


def _os_at_least(version: str, required: str) -> bool:
    return OPENSTACK_VERSIONS.index(version) >= OPENSTACK_VERSIONS.index(required)


def _nova_value(key: str, node: object) -> Any:
    """A stored EC2 node as Nova holds it: public keys as ``{"0": {"_name": "0=name", ...}}``,
    security groups as a list, the launch index as an int, raw leaves as bytes."""
    if key == "security-groups" and isinstance(node, str):
        return node.split("\n") if node else []
    if key == "ami-launch-index" and isinstance(node, str) and node.isdigit():
        return int(node)
    if key == "public-keys" and isinstance(node, dict):
        keys: dict[str, Any] = {}
        for name, entry in node.items():
            index = name.split("=", 1)[0]
            if isinstance(entry, dict):
                keys[index] = {"_name": name, **_tree(entry)}
        return keys
    return _tree(node)


def _tree(node: object) -> Any:
    if isinstance(node, dict):
        if set(node) == {"$base64"}:
            return base64.b64decode(str(node["$base64"]))
        return {key: _tree(value) for key, value in node.items()}
    return node


def _find(data: Any, tokens: list[str]) -> Any:
    """``find_path_in_tree``: a KeyError is a 404, a TypeError a 500."""
    for i, token in enumerate(tokens):
        if isinstance(data, dict | list):
            if token not in data:
                raise NovaNotFound("/".join(tokens[:i]))
            if isinstance(data, list):
                raise NovaServerError(token)  # list indices must be integers
            data = data[token]
        else:
            if i != len(tokens) - 1:
                raise NovaNotFound("/".join(tokens[:i]))
            raise NovaServerError(token)  # a string, bytes or int indexed by a string
    return data


def _print(data: Any) -> bytes:
    """``ec2_md_print``: sorted keys, ``name/`` for a sub-tree, ``_name`` when it has one."""
    if isinstance(data, dict):
        lines = []
        for key in sorted(data):
            if key == "_name":
                continue
            value = data[key]
            if isinstance(value, dict):
                lines.append(str(value["_name"]) if "_name" in value else key + "/")
            else:
                lines.append(key)
        return "\n".join(lines).encode()
    if isinstance(data, list):
        return "\n".join(str(item) for item in data).encode()
    if isinstance(data, bytes):
        return data
    return str(data).encode()


def _devices(devices: Any, version: str) -> Any:
    """Device fields by version: ``vlan`` from Ocata, ``vf_trusted`` from Rocky, shares
    from Epoxy."""
    if not isinstance(devices, list):
        return devices
    shown = []
    for device in devices:
        if not isinstance(device, dict):
            shown.append(device)
            continue
        if device.get("type") == "share" and not _os_at_least(version, EPOXY):
            continue
        kept = dict(device)
        if not _os_at_least(version, OCATA):
            kept.pop("vlan", None)
        if not _os_at_least(version, ROCKY):
            kept.pop("vf_trusted", None)
        shown.append(kept)
    return shown


def _dumps(value: Any) -> bytes:
    """``jsonutils.dump_as_bytes``: ``json.dumps`` with its default separators."""
    return json.dumps(value).encode()
