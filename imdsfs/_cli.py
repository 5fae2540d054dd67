"""The ``imdsfs`` command: argument parsing, logging and exit statuses, nothing else."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__
from ._client import ClientConfig
from ._errors import ConfigError
from ._fs import FsConfig
from ._mount import MountError, MountOptions, mount
from .emulator import _command as emulate_command

__all__ = ["main"]

log = logging.getLogger("imdsfs")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(debug=getattr(args, "debug", False))
    try:
        status: int = args.run(args)
    except ConfigError as exc:
        print(f"imdsfs: {exc}", file=sys.stderr)
        return 2
    except MountError as exc:
        print(f"imdsfs: {exc}", file=sys.stderr)
        return 1
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imdsfs", description="The EC2 instance metadata service as plain files."
    )
    parser.add_argument("--version", action="version", version=f"imdsfs {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    mount_parser = commands.add_parser("mount", help="mount IMDS at a directory")
    _add_mount_arguments(mount_parser)
    mount_parser.set_defaults(run=_run_mount)

    emulate_parser = commands.add_parser("emulate", help="serve a local IMDS emulator")
    emulate_command.add_arguments(emulate_parser)
    emulate_parser.set_defaults(run=emulate_command.run)
    return parser


def _add_mount_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", help="an existing directory, e.g. /run/imds")
    add = parser.add_argument
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
        "--max-requests",
        type=int,
        default=8,
        metavar="N",
        help="HTTP requests in flight at once (default 8)",
    )
    add(
        "--allow-other",
        action="store_true",
        help="let other users read the mount (credential files stay root-only)",
    )
    add("--uid", type=int, default=0, help="owner of the non-secret files (default 0)")
    add("--gid", type=int, default=0, help="group of the non-secret files (default 0)")
    add("-f", "--foreground", action="store_true", help="stay in the foreground")
    add("--debug", action="store_true", help="log every decision (never tokens or secrets)")


def _run_mount(args: argparse.Namespace) -> int:
    if not 1 <= args.token_ttl <= 21600:
        raise ConfigError("--token-ttl must be between 1 and 21600 seconds")
    if args.deadline <= 0:
        raise ConfigError("--deadline must be positive")
    client = ClientConfig(
        endpoint=args.endpoint,
        endpoint_mode=args.endpoint_mode,
        token_ttl=args.token_ttl,
        allow_imdsv1=args.allow_imdsv1,
        deadline=args.deadline * 0.9,  # the client gives up first, with the precise reason
        max_concurrency=args.max_requests,
    )
    options = MountOptions(
        mountpoint=args.mountpoint,
        client=client,
        fs=FsConfig(deadline=args.deadline, uid=args.uid, gid=args.gid),
        ttl_rules=tuple(args.ttl),
        stale_bound=args.stale_bound,
        allow_other=args.allow_other,
        foreground=args.foreground,
    )
    return mount(options)


def _setup_logging(debug: bool) -> None:
    # Under systemd (JOURNAL_STREAM set) the journal adds its own timestamps.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if "JOURNAL_STREAM" not in os.environ:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format=fmt)
    # httpx logs every request URL at INFO: useful only when debugging.
    logging.getLogger("httpx").setLevel(logging.INFO if debug else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
