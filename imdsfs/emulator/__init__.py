"""Faithful local instance metadata services, for tests and demos.

``Emulator`` serves an EC2 ``InstanceDocument`` over real HTTP with the status codes, headers
and byte-exact bodies of real IMDS, plus fault injection, scenarios (spot interruption,
rebalance, maintenance, credential rotation) and request counters. ``GceEmulator`` does the
same for the GCE metadata server (``/computeMetadata/v1/``: listings, recursive JSON, ETags and
``wait_for_change`` long-polls, service-account tokens), sharing the HTTP server, faults and
counters. ``imdsfs emulate [--provider gce]`` runs either from the command line.
"""

from __future__ import annotations

from .._document import InstanceDocument, load_document
from .._errors import DocumentError
from ._command import add_arguments, run
from ._defaults import default_document
from ._emulator import Emulator
from ._gce import GceEmulator, default_gce_document
from ._gce_document import GceDocument, load_gce_document
from ._state import Counters, Faults, ManualClock

__all__ = [
    "Counters",
    "DocumentError",
    "Emulator",
    "Faults",
    "GceDocument",
    "GceEmulator",
    "InstanceDocument",
    "ManualClock",
    "add_arguments",
    "default_document",
    "default_gce_document",
    "load_document",
    "load_gce_document",
    "run",
]
