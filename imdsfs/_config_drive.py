"""An OpenStack config drive read as a snapshot: what Nova's metadata service would serve for
the instance, by mount path (the files an ``imdsfs dump --provider openstack`` holds).

Nova writes a config drive (a file system labelled ``config-2``) from the same data its
metadata service serves (``metadata_for_config_drive`` in ``nova/api/metadata/base.py``):

- ``ec2/latest/meta-data.json``: the EC2 tree, as one JSON object. Nova serves each of its
  listings and values through ``ec2_md_print``, which `_rendered` repeats: an object is its
  keys sorted, one per line, ``key/`` for an object and its ``_name`` for one that has one
  (``0=my-key`` under ``public-keys``), no final newline; a list is its items one per line;
  anything else its ``str()`` (``ami-launch-index`` is the number 0 there, ``0`` here).
- ``ec2/latest/user-data``: the user data, as served at ``/latest/user-data``.
- ``openstack/latest/``: the OpenStack files, byte for byte as served; ``openstack/``'s
  listing names those the drive holds, in the order Nova lists them.

What a drive cannot hold, the mount does not show: the ``password`` (Nova lists it but never
writes it; the mount hides it anyway), and ``meta_data.json``'s ``random_seed`` is the one
drawn when the drive was written (the service draws one per request). Injected files
(``openstack/content/``) are not served by the service's ``/openstack/latest/`` either.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._errors import ConfigError

__all__ = ["read_config_drive"]

EC2_DIR = "ec2/latest"
OPENSTACK_DIR = "openstack/latest"
# What Nova lists in /openstack/latest/, in its order.
OPENSTACK_FILES = (
    "meta_data.json",
    "user_data",
    "password",
    "vendor_data.json",
    "network_data.json",
    "vendor_data2.json",
)


def read_config_drive(path: str) -> dict[str, bytes]:
    """The drive mounted (or copied) at *path* as ``{mount path: bytes}``; ConfigError, one
    line naming the problem, if it is not one."""
    root = Path(path)
    if not root.is_dir():
        if not root.exists():
            raise ConfigError(f"config drive {path}: No such file or directory")
        raise ConfigError(
            f"config drive {path} is not a directory: mount the config-2 file system "
            "(mount -o ro /dev/disk/by-label/config-2 DIR) and give DIR"
        )
    if not (root / OPENSTACK_DIR / "meta_data.json").is_file():
        raise ConfigError(f"{path} is not a config drive: it has no {OPENSTACK_DIR}/meta_data.json")
    files = _ec2_files(root, path)
    present = [name for name in OPENSTACK_FILES if (root / OPENSTACK_DIR / name).is_file()]
    files["openstack/"] = "\n".join(present).encode()
    for name in present:
        files[f"openstack/{name}"] = _read(root, f"{OPENSTACK_DIR}/{name}", path)
    return files


def _ec2_files(root: Path, source: str) -> dict[str, bytes]:
    """The EC2 tree (``""`` its root listing) and ``user-data``; an empty root where the drive
    has no EC2 data (bare-metal drives may hold the OpenStack files alone)."""
    files: dict[str, bytes] = {}
    meta_data = f"{EC2_DIR}/meta-data.json"
    if (root / meta_data).is_file():
        try:
            tree = json.loads(_read(root, meta_data, source))
        except ValueError as exc:
            raise ConfigError(f"config drive {source}: {meta_data}: {exc}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config drive {source}: {meta_data}: not a JSON object")
        _render_directory("", tree, files)
    else:
        files[""] = b""
    if (root / EC2_DIR / "user-data").is_file():
        files["user-data"] = _read(root, f"{EC2_DIR}/user-data", source)
    return files


def _render_directory(path: str, directory: dict[str, object], files: dict[str, bytes]) -> None:
    """*directory*'s listing at mount path *path*, and everything below it."""
    files[path] = _rendered(directory)
    for key, value in directory.items():
        if key == "_name":  # a listing's name for its parent, not an entry
            continue
        if isinstance(value, dict):
            _render_directory(f"{path}{key}/", value, files)
        else:
            files[f"{path}{key}"] = _rendered(value)


def _rendered(value: object) -> bytes:
    """Nova's ``ec2_md_print``: what its EC2 service answers for *value*."""
    if isinstance(value, dict):
        lines = []
        for key in sorted(value):
            child = value[key]
            if key == "_name":
                continue
            if isinstance(child, dict):
                lines.append(str(child["_name"]) if "_name" in child else f"{key}/")
            else:
                lines.append(key)
        return "\n".join(lines).encode()
    if isinstance(value, list):
        return "\n".join(str(item) for item in value).encode()
    return str(value).encode()


def _read(root: Path, relative: str, source: str) -> bytes:
    try:
        return (root / relative).read_bytes()
    except OSError as exc:
        raise ConfigError(f"config drive {source}: {relative}: {exc.strerror}") from None
