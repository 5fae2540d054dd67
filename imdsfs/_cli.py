"""The ``imdsfs`` command: argument parsing, logging and exit statuses, nothing else."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__, emulator, providers
from ._errors import ConfigError, ImdsError, UsageError
from ._fs import FsConfig
from ._fstab import is_fstab_form, to_mount_arguments
from ._introspect import print_stats
from ._logging import error_line, setup_logging
from ._mount import MountOptions, mount
from ._settings import ClientConfig
from ._snapshot import dump
from ._wait import wait

__all__ = ["main"]

log = logging.getLogger("imdsfs")

COMMANDS = ("mount", "dump", "stats", "wait", "emulate")
MAX_ID = 2**32 - 1  # uids and gids are 32-bit, and (u32)-1 means "none": valid ids are below


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if is_fstab_form(argv, COMMANDS):  # run by mount(8): imdsfs SOURCE DIR -o OPTIONS
            argv = to_mount_arguments(argv)
    except ConfigError as exc:
        _print_error(f"imdsfs: {exc}")
        return 2
    args = _parser().parse_args(argv)
    setup_logging(debug=getattr(args, "debug", False))
    try:
        status: int = args.run(args)
    except ConfigError as exc:
        _print_error(f"imdsfs: {exc}")
        return 2
    except (UsageError, ImdsError) as exc:  # ImdsError: IMDS failed `dump`, the message says how
        _print_error(f"imdsfs: {exc}")
        return 1
    return status


def _print_error(text: str) -> None:
    print(error_line(text), file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse, with its error line at priority err when stderr is the journal (a bad option
    in /etc/default/imdsfs): the subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, error_line(f"{self.prog}: error: {message}") + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="imdsfs", description="The EC2 instance metadata service as plain files.")
    parser.add_argument("--version", action="version", version=f"imdsfs {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    mount_parser = commands.add_parser("mount", help="mount IMDS at a directory")
    _add_mount_arguments(mount_parser)
    mount_parser.set_defaults(run=_run_mount)

    dump_parser = commands.add_parser(
        "dump", help="write the whole metadata tree as an instance document (a snapshot)"
    )
    _add_dump_arguments(dump_parser)
    dump_parser.set_defaults(run=_run_dump)

    stats_parser = commands.add_parser("stats", help="print a running mount's counters")
    _add_stats_arguments(stats_parser)
    stats_parser.set_defaults(run=_run_stats)

    wait_parser = commands.add_parser(
        "wait", help="wait for a file of a mount to exist (or change), then print it"
    )
    _add_wait_arguments(wait_parser)
    wait_parser.set_defaults(run=_run_wait)

    emulate_parser = commands.add_parser("emulate", help="serve a local IMDS emulator")
    emulator.add_arguments(emulate_parser)
    emulate_parser.set_defaults(run=emulator.run)
    return parser


def _add_mount_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", help="an existing directory, e.g. /run/imds")
    _add_endpoint_arguments(parser)
    add = parser.add_argument
    add(
        "--from-snapshot",
        metavar="FILE",
        help="serve this instance document (from imdsfs dump) instead of IMDS, offline",
    )
    add(
        "--from-config-drive",
        metavar="DIR",
        help="serve this OpenStack config drive (the config-2 file system, mounted at DIR) "
        "instead of the metadata service, offline",
    )
    add(
        "--token-ttl",
        type=int,
        default=21600,
        metavar="SECONDS",
        help="lifetime asked for each IMDSv2 token (1..21600, default 21600)",
    )
    add(
        "--ttl",
        action="append",
        default=[],
        metavar="PATTERN=SECONDS",
        help="cache rule, repeatable: 'default=300', 'spot/*=5', 'negative=2'",
    )
    add(
        "--deadline",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="longest any file operation may take, retries included (default 5)",
    )
    add(
        "--stale-bound",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="serve the last good value this long when IMDS fails (default 300)",
    )
    add(
        "--allow-other",
        action="store_true",
        help="let other users read the mount (credential files stay root-only)",
    )
    add(
        "--secret-mode",
        type=_secret_mode,
        default=0o400,
        metavar="OCTAL",
        help="mode of credential files and user-data, still owned by root: 0400 (default), "
        "0440 or 0444 to widen it on purpose",
    )
    add("--uid", type=int, default=0, help="owner of the non-secret files (default 0)")
    add("--gid", type=int, default=0, help="group of the non-secret files (default 0)")
    add(
        "--log-file",
        metavar="FILE",
        help="where a background mount logs (default: syslog, else /var/log/imdsfs.log for "
        "root and ~/.local/state/imdsfs.log for others)",
    )
    add(
        "--prefetch",
        action="store_true",
        help="read the whole tree once at mount (one bounded concurrent crawl)",
    )
    add("-f", "--foreground", action="store_true", help="stay in the foreground")
    add("--debug", action="store_true", help="log every decision (never tokens or secrets)")


def _add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """Where IMDS is and how to talk to it: shared by ``mount`` and ``dump``."""
    add = parser.add_argument
    add(
        "--provider",
        choices=[providers.AUTO, *sorted(providers.PROVIDERS)],
        default=providers.AUTO,
        help="which cloud's metadata service (default auto: from DMI, else by asking)",
    )
    add(
        "--endpoint",
        help="IMDS base URL (default: $AWS_EC2_METADATA_SERVICE_ENDPOINT, "
        "else http://169.254.169.254)",
    )
    add(
        "--endpoint-mode",
        choices=["IPv4", "IPv6"],
        help="which default endpoint (default: $AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE or IPv4)",
    )
    add(
        "--allow-imdsv1",
        action="store_true",
        help="fall back to IMDSv1 when no token can be had (never if "
        "AWS_EC2_METADATA_V1_DISABLED is true)",
    )
    add(
        "--max-requests",
        type=int,
        default=8,
        metavar="N",
        help="HTTP requests in flight at once (default 8)",
    )


def _add_dump_arguments(parser: argparse.ArgumentParser) -> None:
    _add_endpoint_arguments(parser)
    add = parser.add_argument
    add(
        "-o",
        "--output",
        metavar="FILE",
        help="write here, mode 0600, instead of stdout (a snapshot holds credentials)",
    )
    add(
        "--omit-secrets",
        action="store_true",
        help="leave out the files a mount keeps root-only (IAM and identity credentials, "
        "user-data), e.g. to share the snapshot",
    )
    add(
        "--deadline",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="longest any one read may take, retries included (default 5)",
    )
    add("--debug", action="store_true", help="log every request")


def _add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", help="where imdsfs is mounted, e.g. /run/imds")
    parser.add_argument("--json", action="store_true", help="print the counters as JSON")


def _secret_mode(text: str) -> int:
    """An octal mode with read bits only, the owner's included: secrets are never writable or
    executable, and widening them is a choice spelled out on the command line."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode like 0440") from None
    if mode & ~0o444 or not mode & 0o400:
        raise argparse.ArgumentTypeError(f"{text!r}: only read bits, 0400 at least (e.g. 0440)")
    return mode


def _run_mount(args: argparse.Namespace) -> int:
    if args.from_snapshot is None and args.from_config_drive is None:  # files, not IMDS
        providers.check_allowed(_client_config(args), os.environ)
    for flag, value in (("--uid", args.uid), ("--gid", args.gid)):
        if not 0 <= value < MAX_ID:
            raise ConfigError(f"{flag} must be between 0 and {MAX_ID - 1}, not {value}")
    if not 1 <= args.token_ttl <= 21600:
        raise ConfigError("--token-ttl must be between 1 and 21600 seconds")
    if args.deadline <= 0:
        raise ConfigError("--deadline must be positive")
    if args.from_snapshot is not None and args.endpoint is not None:
        raise ConfigError("--from-snapshot serves a file: it takes no --endpoint")
    if args.from_config_drive is not None and args.from_snapshot is not None:
        raise ConfigError("--from-config-drive and --from-snapshot are two sources: give one")
    if args.from_config_drive is not None and args.endpoint is not None:
        raise ConfigError("--from-config-drive serves a directory: it takes no --endpoint")
    options = MountOptions(
        mountpoint=args.mountpoint,
        client=_client_config(args, timeout=args.deadline, token_ttl=args.token_ttl),
        fs=FsConfig(
            timeout=args.deadline, uid=args.uid, gid=args.gid, secret_mode=args.secret_mode
        ),
        ttl_rules=tuple(args.ttl),
        stale_bound=args.stale_bound,
        allow_other=args.allow_other,
        foreground=args.foreground,
        prefetch=args.prefetch,
        snapshot=args.from_snapshot,
        config_drive=args.from_config_drive,
        log_file=args.log_file,
    )
    return mount(options)


def _run_dump(args: argparse.Namespace) -> int:
    if args.deadline <= 0:
        raise ConfigError("--deadline must be positive")
    config = _client_config(args, timeout=args.deadline)
    providers.check_allowed(config, os.environ)
    return dump(config, args.output, omit_secrets=args.omit_secrets)


def _client_config(args: argparse.Namespace, **settings: Any) -> ClientConfig:
    """The flags `_add_endpoint_arguments` defines, plus the command's own *settings*."""
    return ClientConfig(
        provider=args.provider,
        endpoint=args.endpoint,
        endpoint_mode=args.endpoint_mode,
        allow_imdsv1=args.allow_imdsv1,
        max_concurrency=args.max_requests,
        **settings,
    )


def _add_wait_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("path", help="a file in a mounted imdsfs; it need not exist yet")
    add(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="give up after this long: exit status 1 (default: wait for ever)",
    )
    add(
        "--changed",
        action="store_true",
        help="wait until the value differs from the one it has now",
    )


def _run_wait(args: argparse.Namespace) -> int:
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout >= 0):
        raise ConfigError("--timeout must be a number of seconds >= 0")
    try:
        return wait(args.path, timeout=args.timeout, changed=args.changed)
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        raise ConfigError(str(exc)) from None


def _run_stats(args: argparse.Namespace) -> int:
    return print_stats(args.mountpoint, as_json=args.json)
