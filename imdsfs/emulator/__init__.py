"""Faithful local instance metadata services, for tests and demos.

``Emulator`` serves an EC2 ``InstanceDocument`` over real HTTP with the status codes, headers
and byte-exact bodies of real IMDS, plus fault injection, scenarios (spot interruption,
rebalance, maintenance, credential rotation) and request counters. ``GceEmulator`` does the
same for the GCE metadata server (``/computeMetadata/v1/``: listings, recursive JSON, ETags and
``wait_for_change`` long-polls, service-account tokens), ``AzureEmulator`` for Azure IMDS (one
JSON document, ``api-version``, scheduled events, managed identity, its rate limit) and
``OpenStackEmulator`` for Nova's metadata service (the EC2 tree without tokens, ``openstack/``,
and a config drive). They share the HTTP server, faults and counters; ``imdsfs emulate
--provider NAME`` runs any of them from the command line.
"""

from __future__ import annotations

from .._document import InstanceDocument, load_document
from .._errors import DocumentError
from ._azure import AzureEmulator, ManagedIdentity
from ._command import add_arguments, run
from ._defaults import default_document
from ._emulator import Emulator
from ._gce import GceEmulator, default_gce_document
from ._gce_document import GceDocument, load_gce_document
from ._openstack import OpenStackEmulator
from ._state import Counters, Faults, ManualClock

__all__ = [
    "AzureEmulator",
    "Counters",
    "DocumentError",
    "Emulator",
    "Faults",
    "GceDocument",
    "GceEmulator",
    "InstanceDocument",
    "ManagedIdentity",
    "ManualClock",
    "OpenStackEmulator",
    "add_arguments",
    "default_document",
    "default_gce_document",
    "load_document",
    "load_gce_document",
    "run",
]
