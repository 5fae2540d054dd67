"""Real clients against the emulators: where cloud-init comes from, and a guard that no
client reaches a real metadata address while it runs."""

from __future__ import annotations

import importlib
import socket
import sys
import warnings
from types import ModuleType
from typing import Any

import pytest

# Debian's cloud-init package installs here, outside the virtualenv.
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"

# The addresses metadata services live at; a test that reached one would be talking to a real
# cloud (or hanging). Loopback is all these tests may use.
METADATA_PREFIXES = ("169.254.", "fe80::a9fe", "fd00:ec2::", "fd00:a9fe", "100.100.100.200")


def cloudinit(module: str) -> ModuleType:
    """Import a cloud-init module, from the virtualenv or Debian's package; skip the test with
    the reason when neither has it."""
    try:
        return _quiet_import(module)
    except ImportError:
        pass
    if DEBIAN_DIST_PACKAGES not in sys.path:
        sys.path.append(DEBIAN_DIST_PACKAGES)  # last: the virtualenv's packages win
    try:
        return _quiet_import(module)
    except ImportError as error:
        pytest.skip(
            f"cloud-init's {module} is not importable ({error}); apt-get install cloud-init"
        )


def _quiet_import(module: str) -> ModuleType:
    """cloud-init imports modules Python deprecates (crypt); that is not ours to fail on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(module)


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection to a metadata address; keep proxies out of the clients' way."""
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> None:
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        if host.startswith(METADATA_PREFIXES):
            raise AssertionError(f"a client tried to reach a real metadata address: {host}")
        connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
