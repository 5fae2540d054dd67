"""Faithful local metadata services, for tests and demos.

``Emulator`` serves an ``InstanceDocument`` over real HTTP with the status codes, headers
and byte-exact bodies of real IMDS , plus fault injection,
scenarios (spot interruption, rebalance, maintenance, credential rotation) and request
counters. ``AzureEmulator`` does the same for Azure IMDS and ``OpenStackEmulator`` for Nova's
metadata service. ``imdsfs emulate`` runs them from the command line.
"""

from __future__ import annotations

from .._document import InstanceDocument, load_document
from .._errors import DocumentError
from ._azure import AzureEmulator, ManagedIdentity
from ._command import add_arguments, run
from ._defaults import default_document
from ._emulator import Emulator
from ._openstack import OpenStackEmulator
from ._state import Counters, Faults, ManualClock

__all__ = [
    "AzureEmulator",
    "Counters",
    "DocumentError",
    "Emulator",
    "Faults",
    "InstanceDocument",
    "ManagedIdentity",
    "ManualClock",
    "OpenStackEmulator",
    "add_arguments",
    "default_document",
    "load_document",
    "run",
]
