"""``imdsfs emulate [--provider ec2|gce|azure|openstack]``: run an emulator until SIGINT or
SIGTERM.

The only stdout output is one line, the URL, flushed at once, so scripts can start the
emulator in the background and read where it listens (``--port 0`` picks a free port).
Everything else goes to stderr through logging. EC2 is the default; an option another cloud's
emulator has no use for is refused (exit status 2) rather than silently ignored. ``--instance``
is that cloud's own document: EC2's instance document, GCE's recursive JSON, what Azure's
``/metadata/instance`` returns, the OpenStack emulator's ``openstack-instance.json`` form.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from .._document import InstanceDocument, load_document
from .._errors import DocumentError
from ._azure import AzureEmulator
from ._azure_document import default_azure_document, load_azure_document
from ._defaults import default_document
from ._emulator import Emulator
from ._gce import GceEmulator, default_gce_document
from ._gce_document import load_gce_document
from ._gce_live import MAINTENANCE_EVENTS
from ._openstack import OpenStackEmulator
from ._openstack_instance import default_openstack_data, load_openstack_data
from ._state import Faults

__all__ = ["add_arguments", "run"]

log = logging.getLogger("imdsfs.emulator")


PROVIDERS = ("ec2", "gce", "azure", "openstack")

# Options only some clouds' emulators use: their "not given" value, and those clouds.
_PARTICULAR: dict[str, tuple[object, tuple[str, ...]]] = {
    "tokens": (None, ("ec2",)),
    "disabled": (False, ("ec2",)),
    "no_user_data": (False, ("ec2", "azure", "openstack")),
    "spot_after": (None, ("ec2", "azure")),
    "event_after": (None, ("ec2", "azure")),
    "rebalance_after": (None, ("ec2",)),
    "rotate_credentials_every": (None, ("ec2",)),
    "maintenance_after": (None, ("gce",)),
    "maintenance_event": ("MIGRATE_ON_HOST_MAINTENANCE", ("gce",)),
    "preempt_after": (None, ("gce",)),
    "rotate_tokens_every": (None, ("gce",)),
}

Served = Emulator | GceEmulator | AzureEmulator | OpenStackEmulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--provider", choices=PROVIDERS, default="ec2", help="which cloud (default ec2)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=1338, help="port; 0 picks a free one")
    parser.add_argument(
        "--instance",
        metavar="FILE",
        help="instance document (JSON) in that cloud's form (see README)",
    )
    parser.add_argument("--seed", type=int, help="seed for the fault injection RNG")

    ec2 = parser.add_argument_group("ec2 only")
    ec2.add_argument("--tokens", choices=("required", "optional"), help="IMDSv2 (required)")
    ec2.add_argument("--disabled", action="store_true", help="answer 403 to everything")
    ec2.add_argument(
        "--no-user-data", action="store_true", help="no user data (also azure, openstack)"
    )

    faults = parser.add_argument_group("faults")
    faults.add_argument("--latency", type=_seconds, default=0.0, metavar="S")
    faults.add_argument("--error-rate", type=_probability, default=0.0, metavar="P")
    faults.add_argument("--reset-rate", type=_probability, default=0.0, metavar="P")
    faults.add_argument("--throttle-rate", type=_probability, default=0.0, metavar="P")
    faults.add_argument("--throttle-status", type=int, choices=(503, 429), default=503)
    faults.add_argument("--stall-rate", type=_probability, default=0.0, metavar="P")
    faults.add_argument("--stall-seconds", type=_seconds, default=30.0, metavar="S")

    scenarios = parser.add_argument_group("ec2 scenarios (seconds after start)")
    scenarios.add_argument(
        "--spot-after", type=_seconds, metavar="S", help="azure: a Preempt scheduled event"
    )
    scenarios.add_argument("--rebalance-after", type=_seconds, metavar="S")
    scenarios.add_argument(
        "--event-after", type=_seconds, metavar="S", help="azure: a Reboot scheduled event"
    )
    scenarios.add_argument("--rotate-credentials-every", type=_seconds, metavar="S")

    gce = parser.add_argument_group("gce scenarios (seconds after start)")
    gce.add_argument("--maintenance-after", type=_seconds, metavar="S")
    gce.add_argument(
        "--maintenance-event",
        choices=MAINTENANCE_EVENTS[1:],
        default=_PARTICULAR["maintenance_event"][0],
        help="the value instance/maintenance-event takes (default %(default)s)",
    )
    gce.add_argument("--preempt-after", type=_seconds, metavar="S")
    gce.add_argument("--rotate-tokens-every", type=_seconds, metavar="S")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    foreign = _foreign_option(args)
    if foreign is not None:
        print(f"imdsfs emulate: {foreign}", file=sys.stderr)
        return 2
    try:
        emulator = _CONFIGURED[args.provider](args)
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
        if isinstance(emulator, Emulator):
            log.info("serving IMDS at %s (tokens %s)", emulator.url, emulator.tokens)
        else:
            log.info("serving %s metadata at %s", args.provider, emulator.url)
        _wait_for_signal()
    finally:
        emulator.stop()
    return 0


def _foreign_option(args: argparse.Namespace) -> str | None:
    """The first option given that this provider's emulator has no use for, as an error."""
    for name, (unset, providers) in _PARTICULAR.items():
        if args.provider not in providers and getattr(args, name) != unset:
            option = "--" + name.replace("_", "-")
            return f"{option} is not an option of --provider {args.provider}"
    return None


def _configured_gce(args: argparse.Namespace) -> GceEmulator:
    document = load_gce_document(args.instance) if args.instance else default_gce_document()
    faults = _faults(args)
    emulator = GceEmulator(document, host=args.host, port=args.port, faults=faults, seed=args.seed)
    if args.maintenance_after is not None:
        emulator.schedule_maintenance_event(args.maintenance_after, args.maintenance_event)
    if args.preempt_after is not None:
        emulator.schedule_preemption(after=args.preempt_after)
    emulator.rotate_tokens_every = args.rotate_tokens_every
    return emulator


def _configured_azure(args: argparse.Namespace) -> AzureEmulator:
    document = load_azure_document(args.instance) if args.instance else default_azure_document()
    azure = AzureEmulator(
        document, host=args.host, port=args.port, faults=_faults(args), seed=args.seed
    )
    if args.no_user_data:
        with contextlib.suppress(KeyError, ValueError):
            azure.set("compute/userData", "")  # Azure shows "" for no user data
    if args.event_after is not None:
        azure.schedule_event(after=args.event_after, event_type="Reboot")
    if args.spot_after is not None:
        azure.schedule_event(after=args.spot_after, event_type="Preempt")
    return azure


def _configured_openstack(args: argparse.Namespace) -> OpenStackEmulator:
    data = load_openstack_data(args.instance) if args.instance else default_openstack_data()
    openstack = OpenStackEmulator(
        data, host=args.host, port=args.port, faults=_faults(args), seed=args.seed
    )
    if args.no_user_data:
        with contextlib.suppress(KeyError):
            openstack.delete("user-data")
    return openstack


def _document(args: argparse.Namespace) -> InstanceDocument:
    document = load_document(args.instance) if args.instance else default_document()
    if args.no_user_data:
        with contextlib.suppress(KeyError):  # already absent: nothing to do
            document.delete("user-data")
    return document


def _faults(args: argparse.Namespace) -> Faults:
    return Faults(
        latency=args.latency,
        error_rate=args.error_rate,
        reset_rate=args.reset_rate,
        throttle_rate=args.throttle_rate,
        throttle_status=args.throttle_status,
        stall_rate=args.stall_rate,
        stall_seconds=args.stall_seconds,
    )


def _configured_emulator(args: argparse.Namespace) -> Emulator:
    emulator = Emulator(
        _document(args),
        host=args.host,
        port=args.port,
        tokens=args.tokens or "required",
        enabled=not args.disabled,
        faults=_faults(args),
        seed=args.seed,
    )
    if args.spot_after is not None:
        emulator.schedule_spot_interruption(after=args.spot_after)
    if args.rebalance_after is not None:
        emulator.schedule_rebalance(after=args.rebalance_after)
    if args.event_after is not None:
        emulator.schedule_maintenance_event(after=args.event_after)
    emulator.rotate_credentials_every = args.rotate_credentials_every
    return emulator


_CONFIGURED: dict[str, Callable[[argparse.Namespace], Served]] = {
    "ec2": _configured_emulator,
    "gce": _configured_gce,
    "azure": _configured_azure,
    "openstack": _configured_openstack,
}


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM; restore the previous handlers afterwards."""
    received = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("%s received, stopping", signal.Signals(signum).name)
        received.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not received.wait(0.5):  # a timed wait lets the handler run promptly
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value
