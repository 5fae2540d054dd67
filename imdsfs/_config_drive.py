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

Nova writes regular files and directories only. Anything else on a drive (a symlink above all:
``network_data.json -> /etc/shadow`` would serve the target, world-readable with
``--allow-other``) refuses the drive: no path below it is followed through a link
(``O_NOFOLLOW`` at each step), and nothing but a regular file is opened.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable
from typing import BinaryIO

from ._errors import ConfigError
from ._settings import ClientConfig

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


def read_config_drive(path: str, *, max_body: int = ClientConfig.max_body) -> dict[str, bytes]:
    """The drive mounted (or copied) at *path* as ``{mount path: bytes}``; ConfigError, one
    line naming the problem, if it is not one or holds a file over *max_body* bytes."""
    drive = _Drive(path, max_body)
    try:
        return _files(drive)
    finally:
        drive.close()


def _files(drive: _Drive) -> dict[str, bytes]:
    if (meta_data := drive.read(f"{OPENSTACK_DIR}/meta_data.json")) is None:
        raise ConfigError(
            f"{drive.source} is not a config drive: it has no {OPENSTACK_DIR}/meta_data.json"
        )
    files = _ec2_files(drive)
    present = {"meta_data.json": meta_data}
    for name in OPENSTACK_FILES[1:]:
        if (body := drive.read(f"{OPENSTACK_DIR}/{name}")) is not None:
            present[name] = body
    files["openstack/"] = "\n".join(present).encode()
    for name, body in present.items():
        files[f"openstack/{name}"] = body
    return files


def _ec2_files(drive: _Drive) -> dict[str, bytes]:
    """The EC2 tree (``""`` its root listing) and ``user-data``; an empty root where the drive
    has no EC2 data (bare-metal drives may hold the OpenStack files alone)."""
    files: dict[str, bytes] = {}
    meta_data = f"{EC2_DIR}/meta-data.json"
    if (data := drive.read(meta_data)) is not None:
        try:
            _render_tree(data, files)
        except ConfigError as exc:
            raise ConfigError(f"config drive {drive.source}: {meta_data}: {exc}") from None
    else:
        files[""] = b""
    if (user_data := drive.read(f"{EC2_DIR}/user-data")) is not None:
        files["user-data"] = user_data
    return files


def _render_tree(data: bytes, files: dict[str, bytes]) -> None:
    """``meta-data.json``'s tree into *files*; ConfigError saying why it cannot be. Valid JSON
    may still be unusable: nested past Python's recursion limit (parsing and rendering both
    recurse), or holding a lone surrogate (``"\\ud800"``), which no UTF-8 name or value has."""
    try:
        tree = json.loads(data)
        if not isinstance(tree, dict):
            raise ConfigError("not a JSON object")
        _render_directory("", tree, files)
    except RecursionError:
        raise ConfigError("nested too deeply") from None
    except UnicodeEncodeError as exc:  # before ValueError, which it is
        lone = exc.object[exc.start : exc.end]
        raise ConfigError(f"holds {lone!r}, which is no UTF-8 ({exc.reason})") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


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


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: should a FIFO appear between the lstat and the open, the open must not wait.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _Drive:
    """The drive's directory, read only through what lies below it: each step of a path is
    opened relative to the last with ``O_NOFOLLOW``, so a link anywhere on the way (a file or a
    directory, ``openstack/latest -> /etc``) is refused, never followed."""

    def __init__(self, path: str, max_body: int) -> None:
        self.source = path
        self._max_body = max_body
        self._over = f"over the {max_body} a response may have (max_body)"
        try:  # the directory given may be a link: the user chose it, and it is not on the drive
            self._root = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise ConfigError(
                    f"config drive {path} is not a directory: mount the config-2 file system "
                    "(mount -o ro /dev/disk/by-label/config-2 DIR) and give DIR"
                ) from None
            raise ConfigError(f"config drive {path}: {exc.strerror}") from None

    def close(self) -> None:
        os.close(self._root)

    def read(self, relative: str) -> bytes | None:
        """The regular file at *relative*, or None if it (or a directory on its way) is
        absent; ConfigError naming the first step that is a link or of the wrong kind."""
        *directories, name = relative.split("/")
        fd = os.dup(self._root)
        try:
            for depth, directory in enumerate(directories, 1):
                step = "/".join(directories[:depth])
                parent, fd = fd, self._open(fd, directory, step, _DIRECTORY, stat.S_ISDIR)
                os.close(parent)
                if fd < 0:
                    return None
            file = self._open(fd, name, relative, _FILE, stat.S_ISREG)
        finally:
            if fd >= 0:
                os.close(fd)
        if file < 0:
            return None
        with os.fdopen(file, "rb") as opened:
            return self._bounded(opened, relative)

    def _bounded(self, file: BinaryIO, relative: str) -> bytes:
        """*file*'s bytes, if no more than a response may have: each is held for the mount's
        life, as a response would be, and so bounded alike. Sized before reading, and read no
        further than the bound should it grow meanwhile."""
        size = os.fstat(file.fileno()).st_size
        if size > self._max_body:
            raise self._error(relative, f"{size} bytes, {self._over}")
        try:
            data = file.read(self._max_body + 1)
        except OSError as exc:
            raise self._error(relative, exc.strerror) from None
        if len(data) > self._max_body:
            raise self._error(relative, f"grew while being read, {self._over}")
        return data

    def _open(
        self, parent: int, name: str, step: str, flags: int, kind: Callable[[int], bool]
    ) -> int:
        """*name* in *parent* opened if it is of *kind* (checked before opening, so no device
        or FIFO is ever opened, and again after, against a swap in between); -1 if absent."""
        try:
            self._check(os.stat(name, dir_fd=parent, follow_symlinks=False), step, kind)
            fd = os.open(name, flags, dir_fd=parent)
        except FileNotFoundError:
            return -1
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a link now: swapped since the lstat
                raise self._error(step, "was replaced while being read: refused") from None
            raise self._error(step, exc.strerror) from None
        try:
            self._check(os.fstat(fd), step, kind)
        except ConfigError:
            os.close(fd)
            raise
        return fd

    def _check(self, status: os.stat_result, step: str, kind: Callable[[int], bool]) -> None:
        if stat.S_ISLNK(status.st_mode):
            raise self._error(step, "is a symbolic link: refused, not followed")
        if not kind(status.st_mode):
            wanted = "a directory" if kind is stat.S_ISDIR else "a regular file"
            raise self._error(step, f"not {wanted}")

    def _error(self, step: str, problem: str | None) -> ConfigError:
        return ConfigError(f"config drive {self.source}: {step}: {problem}")
