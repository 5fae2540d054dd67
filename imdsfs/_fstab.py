"""The ``mount(8)`` calling convention: ``imdsfs SOURCE MOUNTPOINT -o OPT[,OPT...]``.

An fstab line ``imds /run/imds fuse.imdsfs ro,allow_other,endpoint=http://... 0 0`` makes
``mount`` run ``mount.fuse3``, which runs ``/bin/sh -c 'imdsfs imds /run/imds -o ro,...'``
after adding ``dev,suid`` for root (libfuse's util/mount.fuse.c). This module turns that
command line into the equivalent ``imdsfs mount`` command line, so argparse still validates
every value and there is one set of options, documented once.

The source field is a free label (``imds`` by convention): where IMDS is comes from
``endpoint=``, as on the command line. Options mount(8) or mount.fuse3 pass for every file
system are accepted and ignored: imdsfs is always read-only, ``nodev``, ``nosuid`` and
``noexec``, whatever they say.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._errors import ConfigError

__all__ = ["SWITCHES", "VALUED", "is_fstab_form", "to_mount_arguments"]

# fstab option → imdsfs mount flag, for options that stand alone ...
SWITCHES: dict[str, str] = {
    "allow_other": "--allow-other",
    "allow_imdsv1": "--allow-imdsv1",
    "debug": "--debug",
    "foreground": "--foreground",
    "prefetch": "--prefetch",
}
# ... and for options written ``name=value``.
VALUED: dict[str, str] = {
    "uid": "--uid",
    "gid": "--gid",
    "endpoint": "--endpoint",
    "endpoint_mode": "--endpoint-mode",
    "token_ttl": "--token-ttl",
    "ttl": "--ttl",  # repeatable: ttl=spot/**=2,ttl=default=120
    "deadline": "--deadline",
    "stale_bound": "--stale-bound",
    "max_requests": "--max-requests",
    "secret_mode": "--secret-mode",
    "snapshot": "--from-snapshot",
    "config_drive": "--from-config-drive",
    "log_file": "--log-file",
    "provider": "--provider",
}

# Generic mount options: meaningful to mount(8), systemd or the kernel, not to imdsfs.
_IGNORED = frozenset(
    {
        "ro", "rw", "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group",
        "nofail", "_netdev", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "sync",
        "async", "atime", "noatime", "relatime", "norelatime", "strictatime", "diratime",
        "nodiratime", "lazytime", "nolazytime", "silent", "loud",
    }
)  # fmt: skip
_IGNORED_PREFIXES = ("x-", "comment=")  # x-systemd.automount, x-gvfs-show, ...


def is_fstab_form(argv: Sequence[str], commands: Sequence[str]) -> bool:
    """True for ``SOURCE MOUNTPOINT ...``: a first argument that is neither a command nor an
    option. A mistyped command with no second argument still gets argparse's message."""
    return len(argv) >= 2 and argv[0] not in commands and not argv[0].startswith("-")


def to_mount_arguments(argv: Sequence[str]) -> list[str]:
    """``[SOURCE, MOUNTPOINT, "-o", "a,b=c"]`` → ``["mount", MOUNTPOINT, "--a", "--b", "c"]``.

    Raises ConfigError naming the first option imdsfs does not know.
    """
    _source, mountpoint, *rest = argv
    arguments = ["mount", mountpoint]
    for option in _split_options(rest):
        arguments += _translate(option)
    return arguments


def _split_options(rest: Sequence[str]) -> list[str]:
    """The options of every ``-o LIST`` or ``-oLIST``; anything else is an error."""
    options: list[str] = []
    items = iter(rest)
    for item in items:
        if item == "-o":
            value = next(items, None)
            if value is None:
                raise ConfigError("-o needs a list of mount options")
        elif item.startswith("-o"):
            value = item[2:]
        else:
            raise ConfigError(f"unexpected argument {item!r}: use imdsfs SOURCE DIR -o OPTIONS")
        options += [option for option in value.split(",") if option]
    return options


def _translate(option: str) -> list[str]:
    if option in _IGNORED or option.startswith(_IGNORED_PREFIXES):
        return []
    name, has_value, value = option.partition("=")
    if name in SWITCHES and not has_value:
        return [SWITCHES[name]]
    if name in VALUED and has_value:
        return [VALUED[name], value]
    if name in SWITCHES or name in VALUED:
        form = name if name in SWITCHES else f"{name}=VALUE"
        raise ConfigError(f"mount option {option!r}: write it as {form}")
    known = ", ".join([*SWITCHES, *(f"{name}=" for name in VALUED)])
    raise ConfigError(f"unknown mount option {name!r} (imdsfs knows {known})")
