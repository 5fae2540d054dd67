"""``imdsfs emulate --provider azure|openstack``: the other clouds' emulators on the CLI.

The same contract as EC2's: one line on stdout (the URL), logs on stderr, exit status 0 on
SIGINT or SIGTERM, 2 for a bad ``--instance`` file, 1 if the port is taken. ``--instance``
is that cloud's own document (Azure: what ``/metadata/instance`` returns; OpenStack: the
emulator's ``openstack-instance.json`` format). The fault options apply to every cloud;
``--event-after`` schedules an Azure ``Reboot`` event and ``--spot-after`` a ``Preempt``
(Spot eviction). EC2-only options are ignored with a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from .._errors import DocumentError
from ._azure import AzureEmulator
from ._azure_document import default_azure_document, load_azure_document
from ._openstack import OpenStackEmulator
from ._openstack_instance import default_openstack_data, load_openstack_data
from ._served import ServedEmulator
from ._state import Faults

__all__ = ["PROVIDERS", "run"]

PROVIDERS = ("ec2", "azure", "openstack")

log = logging.getLogger("imdsfs.emulator")

# EC2-only options and the value that means "not given".
_EC2_ONLY = {
    "tokens": "required",
    "disabled": False,
    "rebalance_after": None,
    "rotate_credentials_every": None,
}


def run(args: argparse.Namespace, wait: Callable[[], None]) -> int:
    for option, unset in _EC2_ONLY.items():
        if getattr(args, option, unset) != unset:
            log.warning("--%s applies to EC2 only; ignored", option.replace("_", "-"))
    try:
        emulator = _emulator(args)
    except DocumentError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        emulator.start()
    except OSError as error:
        print(f"cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    try:
        print(emulator.url, flush=True)
        log.info("serving %s metadata at %s", args.provider, emulator.url)
        wait()
    finally:
        emulator.stop()
    return 0


def _emulator(args: argparse.Namespace) -> ServedEmulator:
    faults = Faults(
        latency=args.latency,
        error_rate=args.error_rate,
        reset_rate=args.reset_rate,
        throttle_rate=args.throttle_rate,
        throttle_status=args.throttle_status,
        stall_rate=args.stall_rate,
        stall_seconds=args.stall_seconds,
    )
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "faults": faults,
        "seed": args.seed,
    }
    if args.provider == "azure":
        document = load_azure_document(args.instance) if args.instance else None
        azure = AzureEmulator(document or default_azure_document(), **common)
        if args.no_user_data:
            with contextlib.suppress(KeyError, ValueError):
                azure.set("compute/userData", "")  # Azure shows "" for no user data
        if args.event_after is not None:
            azure.schedule_event(after=args.event_after, event_type="Reboot")
        if args.spot_after is not None:
            azure.schedule_event(after=args.spot_after, event_type="Preempt")
        return azure
    data = load_openstack_data(args.instance) if args.instance else default_openstack_data()
    openstack = OpenStackEmulator(data, **common)
    if args.no_user_data:
        with contextlib.suppress(KeyError):
            openstack.delete("user-data")
    for option in ("spot_after", "event_after"):
        if getattr(args, option) is not None:
            log.warning("--%s has no OpenStack counterpart; ignored", option.replace("_", "-"))
    return openstack
