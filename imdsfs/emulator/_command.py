"""``imdsfs emulate [--provider ec2|gce]``: run an emulator until SIGINT or SIGTERM.

The only stdout output is one line, the URL, flushed at once, so scripts can start the
emulator in the background and read where it listens (``--port 0`` picks a free port).
Everything else goes to stderr through logging. EC2 is the default; an option that belongs to
the other provider is refused (exit status 2) rather than silently ignored.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from types import FrameType

from .._document import InstanceDocument, load_document
from .._errors import DocumentError
from ._defaults import default_document
from ._emulator import Emulator
from ._gce import GceEmulator, default_gce_document
from ._gce_document import load_gce_document
from ._gce_live import MAINTENANCE_EVENTS
from ._state import Faults

__all__ = ["add_arguments", "run"]

log = logging.getLogger("imdsfs.emulator")


# Options of one provider only, with their defaults: given to the other, they are an error.
_EC2_ONLY = {
    "tokens": None,
    "disabled": False,
    "no_user_data": False,
    "spot_after": None,
    "rebalance_after": None,
    "event_after": None,
    "rotate_credentials_every": None,
}
_GCE_ONLY = {
    "maintenance_after": None,
    "maintenance_event": "MIGRATE_ON_HOST_MAINTENANCE",
    "preempt_after": None,
    "rotate_tokens_every": None,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--provider", choices=("ec2", "gce"), default="ec2", help="which cloud (default ec2)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=1338, help="port; 0 picks a free one")
    parser.add_argument(
        "--instance",
        metavar="FILE",
        help="instance document (JSON): EC2's format, or for gce the recursive JSON GCE returns",
    )
    parser.add_argument("--seed", type=int, help="seed for the fault injection RNG")

    ec2 = parser.add_argument_group("ec2 only")
    ec2.add_argument("--tokens", choices=("required", "optional"), help="IMDSv2 (required)")
    ec2.add_argument("--disabled", action="store_true", help="answer 403 to everything")
    ec2.add_argument("--no-user-data", action="store_true", help="serve 404 for user-data")

    faults = parser.add_argument_group("faults")
    faults.add_argument("--latency", type=_seconds, default=0.0, metavar="S")
    faults.add_argument("--error-rate", type=_probability, default=0.0, metavar="P")
    faults.add_argument("--reset-rate", type=_probability, default=0.0, metavar="P")
    faults.add_argument("--throttle-rate", type=_probability, default=0.0, metavar="P")
    faults.add_argument("--throttle-status", type=int, choices=(503, 429), default=503)
    faults.add_argument("--stall-rate", type=_probability, default=0.0, metavar="P")
    faults.add_argument("--stall-seconds", type=_seconds, default=30.0, metavar="S")

    scenarios = parser.add_argument_group("ec2 scenarios (seconds after start)")
    scenarios.add_argument("--spot-after", type=_seconds, metavar="S")
    scenarios.add_argument("--rebalance-after", type=_seconds, metavar="S")
    scenarios.add_argument("--event-after", type=_seconds, metavar="S")
    scenarios.add_argument("--rotate-credentials-every", type=_seconds, metavar="S")

    gce = parser.add_argument_group("gce scenarios (seconds after start)")
    gce.add_argument("--maintenance-after", type=_seconds, metavar="S")
    gce.add_argument(
        "--maintenance-event",
        choices=MAINTENANCE_EVENTS[1:],
        default=_GCE_ONLY["maintenance_event"],
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
        emulator: Emulator | GceEmulator
        if args.provider == "gce":
            emulator = _configured_gce(args)
        else:
            emulator = _configured_emulator(args, _document(args))
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
        if isinstance(emulator, GceEmulator):
            log.info("serving the GCE metadata server at %s/computeMetadata/v1/", emulator.url)
        else:
            log.info("serving IMDS at %s (tokens %s)", emulator.url, emulator.tokens)
        _wait_for_signal()
    finally:
        emulator.stop()
    return 0


def _foreign_option(args: argparse.Namespace) -> str | None:
    """The first option given that belongs to the other provider, as an error message."""
    others = _GCE_ONLY if args.provider == "ec2" else _EC2_ONLY
    for name, default in others.items():
        if getattr(args, name) != default:
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


def _configured_emulator(args: argparse.Namespace, document: InstanceDocument) -> Emulator:
    emulator = Emulator(
        document,
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
