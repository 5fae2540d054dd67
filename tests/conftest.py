"""Shared fixtures: a running IMDS emulator on 127.0.0.1 for every test that needs one."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import sys
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx
import pytest

from imdsfs import ClientConfig, ImdsClient
from imdsfs.emulator import AzureEmulator, Emulator, GceEmulator, ManualClock
from imdsfs.emulator._served import ServedEmulator
from imdsfs.testing import MountNotReady, MountProcess

TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"

MakeEmulator = Callable[..., Emulator]

# One client for the helpers: creating an httpx.Client builds an SSL context (~20 ms), which
# would dominate the suite. IMDS closes every connection, so nothing leaks between tests.
_client = httpx.Client(trust_env=False)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """The packaged default instance, IMDSv2 required, on a free port; stopped afterwards."""
    with Emulator() as emu:
        yield emu


@pytest.fixture
def emulator_clock() -> ManualClock:
    """A clock for ``make_emulator(clock=emulator_clock)``: tokens and scenarios follow it."""
    return ManualClock()


@pytest.fixture
def make_emulator() -> Iterator[MakeEmulator]:
    """``make_emulator(**Emulator kwargs)`` starts an emulator; all are stopped afterwards."""
    yield from _starting(Emulator)


AnyEmulator = TypeVar("AnyEmulator", bound=ServedEmulator)


def _starting(kind: type[AnyEmulator]) -> Iterator[Callable[..., AnyEmulator]]:
    """A factory of started emulators of *kind*, each stopped once the test is done."""
    started: list[AnyEmulator] = []

    def make(*args: Any, **kwargs: Any) -> AnyEmulator:
        emu = kind(*args, **kwargs)
        emu.start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


MakeClient = Callable[..., ImdsClient]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """``make_client(emu, environ=None, **config)``: an `ImdsClient` on ``emu``, with no
    environment unless given one; closed after the test."""
    clients: list[ImdsClient] = []

    def make(emu: Emulator, environ: dict[str, str] | None = None, **config: Any) -> ImdsClient:
        client = ImdsClient(ClientConfig(endpoint=emu.url, **config), environ=environ or {})
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def gets(emu: Emulator, path: str) -> int:
    """GETs ``emu`` received for ``/latest/<path>`` (``meta-data/instance-id``)."""
    return emu.counters.count(method="GET", path=f"/latest/{path}")


def imds_token(emu: Emulator, ttl: int = 21600) -> str:
    """A fresh IMDSv2 token from ``emu``."""
    response = _client.put(emu.url + "/latest/api/token", headers={TOKEN_TTL_HEADER: str(ttl)})
    assert response.status_code == 200, response
    return response.text


def imds_request(
    emu: Emulator,
    path: str,
    *,
    method: str = "GET",
    token: bool | str = True,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> httpx.Response:
    """One request to ``emu``; ``token=True`` fetches a fresh token, a string uses that one,
    False sends none. Never goes through a proxy."""
    all_headers = dict(headers or {})
    if token is True:
        token = imds_token(emu)
    if isinstance(token, str):
        all_headers[TOKEN_HEADER] = token
    return _client.request(method, emu.url + path, headers=all_headers, timeout=timeout)


def imds_get(emu: Emulator, path: str, token: bool | str = True) -> httpx.Response:
    """``GET path`` with a fresh token (``token=True``), a given one, or none (False)."""
    return imds_request(emu, path, token=token)


# --- the GCE metadata server ------------------------------------------------------------------


@pytest.fixture
def azure_emulator() -> Iterator[AzureEmulator]:
    """The packaged Azure VM on a free port (Azure's own 5/s limit on); stopped afterwards."""
    with AzureEmulator() as emu:
        yield emu


GCE_ROOT = "/computeMetadata/v1/"
FLAVOR = {"Metadata-Flavor": "Google"}
MakeGceEmulator = Callable[..., GceEmulator]


@pytest.fixture
def gce_emulator() -> Iterator[GceEmulator]:
    """The packaged GCE instance on a free port; stopped afterwards."""
    with GceEmulator() as emu:
        yield emu


@pytest.fixture
def make_gce_emulator() -> Iterator[MakeGceEmulator]:
    """``make_gce_emulator(**GceEmulator kwargs)`` starts one; all are stopped afterwards."""
    yield from _starting(GceEmulator)


def gce_request(
    emu: GceEmulator,
    path: str,
    *,
    method: str = "GET",
    flavor: bool = True,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> httpx.Response:
    """One request to ``emu``: ``path`` relative to /computeMetadata/v1/ unless it starts with
    ``/``; with ``Metadata-Flavor: Google`` unless ``flavor`` is False. No redirects followed."""
    url = emu.url + (path if path.startswith("/") else GCE_ROOT + path)
    all_headers = {**(FLAVOR if flavor else {}), **(headers or {})}
    return _client.request(method, url, headers=all_headers, timeout=timeout)


# --- real FUSE mounts -------------------------------------------------------------------------

FUSE_REQUIRED = os.environ.get("IMDSFS_REQUIRE_FUSE") == "1"


def _fuse_unavailable() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt install fuse3)"
    if os.geteuid() != 0:
        return "FUSE tests mount with allow_other and need root"
    return None


@pytest.fixture(scope="session")
def fuse_available() -> None:
    """Skip FUSE tests where FUSE cannot work, except in CI (IMDSFS_REQUIRE_FUSE=1): fail."""
    reason = _fuse_unavailable()
    if reason is None:
        return
    if FUSE_REQUIRED:
        pytest.fail(f"FUSE is required here (IMDSFS_REQUIRE_FUSE=1) but {reason}")
    pytest.skip(reason)


@dataclass
class Mounted(MountProcess):
    """A running ``imdsfs mount --foreground`` (see `imdsfs.testing`), in a test."""

    log_path: Path
    expected_status: int = 0  # a test that kills the daemon on purpose says so here


def start_mount(
    path: Path, log_path: Path, *args: str, env: Mapping[str, str] | None = None
) -> Mounted:
    """Start the daemon and wait until the mount answers; fail the test if it does not.

    *env* is added to the daemon's environment (e.g. a fake ``NOTIFY_SOCKET``)."""
    try:
        started = MountProcess.start(path, *args, log_path=log_path, env=env)
    except MountNotReady as exc:
        pytest.fail(str(exc))
    return Mounted(started.path, started.process, log_path)


def finish_mount(mounted: Mounted) -> None:
    """Fail the test if the daemon crashed, logged a traceback or exited non-zero."""
    status = mounted.unmount()
    log = mounted.log()
    assert "Traceback" not in log, log
    assert status == mounted.expected_status, f"imdsfs exited {status}; log:\n{log}"


@pytest.fixture
def mount_base() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is root-only), so tests that
    read as ``nobody`` are denied by imdsfs's modes, not by the path leading to the mount."""
    base = Path(tempfile.mkdtemp(prefix="imdsfs-test-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def make_mount(
    fuse_available: None, mount_base: Path, tmp_path: Path
) -> Iterator[Callable[..., Mounted]]:
    """``make_mount(emulator, *extra_args, env=None)`` mounts against *emulator* (None: no
    ``--endpoint``, for ``--from-snapshot``); unmounted after."""
    mounts: list[Mounted] = []

    def make(
        emulator: Emulator | None, *args: str, env: Mapping[str, str] | None = None
    ) -> Mounted:
        index = len(mounts)
        log_path = tmp_path / f"imdsfs{index}.log"
        # The EC2 emulator: say so, or detection would probe it (and count in its counters).
        endpoint = ["--provider", "ec2", "--endpoint", emulator.url] if emulator else []
        mounted = start_mount(mount_base / f"mnt{index}", log_path, *endpoint, *args, env=env)
        mounts.append(mounted)
        return mounted

    yield make
    for mounted in mounts:  # unmount every one before any assertion can stop the loop
        mounted.unmount()
    for mounted in mounts:
        finish_mount(mounted)


@pytest.fixture
def mounted(make_mount: Callable[..., Mounted], emulator: Emulator) -> Mounted:
    """The default emulator mounted with default options."""
    return make_mount(emulator)


# -- real clients ------------------------------------------------------------------------------

# Debian's cloud-init: installed, or unpacked (never installed) by scripts/bootstrap.sh.
CLOUD_INIT_PLACES = (
    Path("/usr/lib/python3/dist-packages"),
    Path("/var/cache/imdsfs-test/cloud-init/usr/lib/python3/dist-packages"),
)
ImportCloudInit = Callable[[str], ModuleType]

# Where metadata services live; a client that reached one would be talking to a real cloud
# (or hanging). Loopback is all a test may use.
METADATA_PREFIXES = ("169.254.", "fe80::a9fe", "fd00:ec2::", "fd00:a9fe", "100.100.100.200")


@pytest.fixture
def import_cloud_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ImportCloudInit:
    """``import_cloud_init("cloudinit.sources.DataSourceGCE")``: a module of Debian's
    cloud-init, imported into this venv from an import root holding only ``cloudinit`` and
    ``configobj`` (the one dependency the venv lacks), so no other Debian module shadows the
    venv's; all undone after the test. Skips when cloud-init is missing; a module this
    cloud-init does not have raises ModuleNotFoundError. DNS hijack detection (three lookups
    of names that must not exist) is answered as if done."""
    root = tmp_path / "cloud-init-root"

    def prepare() -> None:
        if sys.version_info[:2] != (3, 11):
            pytest.skip("Debian 12's cloud-init is built for Python 3.11")
        found = [p for p in CLOUD_INIT_PLACES if (p / "cloudinit" / "sources").is_dir()]
        if not found:
            pytest.skip("cloud-init is missing: scripts/bootstrap.sh unpacks it (as root)")
        root.mkdir()
        for name in ("cloudinit", "configobj"):
            (root / name).symlink_to(found[0] / name)
        monkeypatch.syspath_prepend(str(root))
        for name in [m for m in sys.modules if m.startswith(("cloudinit", "configobj"))]:
            monkeypatch.delitem(sys.modules, name)
        util = _quiet_import("cloudinit.util")
        monkeypatch.setattr(util, "_DNS_REDIRECT_IP", set())

    def load(module: str) -> ModuleType:
        if not root.exists():
            prepare()
        return _quiet_import(module)

    return load


def _quiet_import(module: str) -> ModuleType:
    """cloud-init imports modules Python deprecates (crypt): not ours to fail on."""
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
