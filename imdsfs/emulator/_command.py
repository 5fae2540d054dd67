"""``imdsfs emulate``: run the emulator until SIGINT or SIGTERM.

The only stdout output is one line, the URL, flushed at once, so scripts can start the
emulator in the background and read where it listens (``--port 0`` picks a free port).
Everything else goes to stderr through logging.
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
from . import _command_clouds
from ._command_clouds import PROVIDERS
from ._defaults import default_document
from ._emulator import Emulator
from ._state import Faults

__all__ = ["add_arguments", "run"]

log = logging.getLogger("imdsfs.emulator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--provider", choices=PROVIDERS, default="ec2", help="which cloud's service to emulate"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=1338, help="port; 0 picks a free one")
    parser.add_argument("--instance", metavar="FILE", help="instance document (JSON)")
    parser.add_argument("--tokens", choices=("required", "optional"), default="required")
    parser.add_argument("--disabled", action="store_true", help="answer 403 to everything")
    parser.add_argument("--no-user-data", action="store_true", help="serve 404 for user-data")
    parser.add_argument("--seed", type=int, help="seed for the fault injection RNG")

    faults = parser.add_argument_group("faults")
    faults.add_argument("--latency", type=_seconds, default=0.0, metavar="S")
    faults.add_argument("--error-rate", type=_probability, default=0.0, metavar="P")
    faults.add_argument("--reset-rate", type=_probability, default=0.0, metavar="P")
    faults.add_argument("--throttle-rate", type=_probability, default=0.0, metavar="P")
    faults.add_argument("--throttle-status", type=int, choices=(503, 429), default=503)
    faults.add_argument("--stall-rate", type=_probability, default=0.0, metavar="P")
    faults.add_argument("--stall-seconds", type=_seconds, default=30.0, metavar="S")

    scenarios = parser.add_argument_group("scenarios (seconds after start)")
    scenarios.add_argument("--spot-after", type=_seconds, metavar="S")
    scenarios.add_argument("--rebalance-after", type=_seconds, metavar="S")
    scenarios.add_argument("--event-after", type=_seconds, metavar="S")
    scenarios.add_argument("--rotate-credentials-every", type=_seconds, metavar="S")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    if getattr(args, "provider", "ec2") != "ec2":
        return _command_clouds.run(args, _wait_for_signal)
    try:
        document = _document(args)
    except DocumentError as error:
        print(error, file=sys.stderr)
        return 2
    emulator = _configured_emulator(args, document)
    try:
        emulator.start()
    except OSError as error:
        print(f"cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    try:
        print(emulator.url, flush=True)
        log.info("serving IMDS at %s (tokens %s)", emulator.url, emulator.tokens)
        _wait_for_signal()
    finally:
        emulator.stop()
    return 0


def _document(args: argparse.Namespace) -> InstanceDocument:
    document = load_document(args.instance) if args.instance else default_document()
    if args.no_user_data:
        with contextlib.suppress(KeyError):  # already absent: nothing to do
            document.delete("user-data")
    return document


def _configured_emulator(args: argparse.Namespace, document: InstanceDocument) -> Emulator:
    faults = Faults(
        latency=args.latency,
        error_rate=args.error_rate,
        reset_rate=args.reset_rate,
        throttle_rate=args.throttle_rate,
        throttle_status=args.throttle_status,
        stall_rate=args.stall_rate,
        stall_seconds=args.stall_seconds,
    )
    emulator = Emulator(
        document,
        host=args.host,
        port=args.port,
        tokens=args.tokens,
        enabled=not args.disabled,
        faults=faults,
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
