"""Mount lifecycle: check the mountpoint, daemonize, run pyfuse3 under trio, unmount cleanly.

The order matters and follows what was measured: fork *before*
`trio.run` and `pyfuse3.init`, report readiness to the parent through a pipe only once the mount
exists, turn SIGTERM/SIGINT into `pyfuse3.terminate()` so `close(unmount=True)` always runs, and
clear a stale mount left by a crash before mounting again.
"""

from __future__ import annotations

import errno
import faulthandler
import logging
import logging.handlers
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pyfuse3
import trio

from . import _systemd as systemd
from . import providers
from ._cache import MetadataCache
from ._client import ImdsClient
from ._errors import ConfigError, MountError
from ._fs import FsConfig, ImdsOperations
from ._paths import FS_TYPE, mount_table_path
from ._provider import Provider
from ._settings import ClientConfig
from ._snapshot import SNAPSHOT_ENDPOINT, FilesTransport, open_config_drive, open_snapshot
from ._tree import MetadataTree
from ._ttl import TtlPolicy

__all__ = ["MountOptions", "default_log_file", "mount"]

log = logging.getLogger(__name__)

_FUSE_DEVICE = "/dev/fuse"
# What a mount whose daemon died answers: ENOTCONN, or ECONNABORTED right after a SIGKILL.
_STALE_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED)
_PROBE_TIMEOUT = 1.0  # what a mount at boot may lose to an IMDS that does not answer yet
_SYSLOG_SOCKET = "/dev/log"
_DETACH_POLL = 0.5  # seconds between looks at /proc/self/mountinfo


@dataclass(frozen=True)
class MountOptions:
    mountpoint: str
    client: ClientConfig = field(default_factory=ClientConfig)
    fs: FsConfig = field(default_factory=FsConfig)
    ttl_rules: tuple[str, ...] = ()
    stale_bound: float = 300.0
    allow_other: bool = False
    foreground: bool = False
    # Kernel requests served at once. Each is a cheap trio task and HTTP is bounded far lower,
    # in the client; a request the daemon has no task for waits in the kernel, where its
    # deadline is already running.
    max_tasks: int = 4096
    prefetch: bool = False  # crawl the whole tree once at mount, so the first walk is warm
    snapshot: str | None = None  # serve this instance document (imdsfs dump) instead of IMDS
    config_drive: str | None = None  # serve this OpenStack config drive's directory instead
    log_file: str | None = None  # a background mount's log; None: syslog, else a default file

    def fuse_options(self) -> set[str]:
        options = {"fsname=imds", "subtype=imdsfs", "ro", "nodev", "nosuid", "noexec"}
        options |= {"noatime", "default_permissions"}  # the kernel enforces the 0400 secrets
        if self.allow_other:
            options.add("allow_other")
        return options


def mount(options: MountOptions) -> int:
    """Mount and serve until unmounted or signalled; the exit status for the CLI."""
    mountpoint = os.path.abspath(options.mountpoint)
    offline = _offline_source(options)  # read now, so a bad file too fails before the fork
    transport = None  # the network
    if offline is not None:
        name, transport = offline
        client = replace(options.client, endpoint=SNAPSHOT_ENDPOINT, provider=name)
        options = replace(options, client=client)
    policy = TtlPolicy.from_rules(options.ttl_rules)  # a bad rule fails before anything forks
    prepare_mountpoint(mountpoint)
    provider = providers.create(options.client)  # and a bad endpoint; auto: which cloud
    if isinstance(transport, FilesTransport):
        transport.serve_for(provider)
    if provider.detected is not None:
        log.info("provider %s: %s", provider.name, provider.detected)
    policy = TtlPolicy.from_rules(options.ttl_rules, builtin=provider.ttl_rules)
    if offline is None:
        _warn_if_nothing_answers(provider.endpoint)
    setup = _Setup(options, mountpoint, provider, policy, transport)
    if options.foreground:
        _serve(setup, ready=lambda: None)
        return 0
    return _serve_in_background(setup)


def _offline_source(options: MountOptions) -> tuple[str, httpx.AsyncBaseTransport] | None:
    """The provider and transport of a snapshot or config drive mount; None: the network."""
    if options.snapshot is not None:
        name, transport = open_snapshot(options.snapshot)
        source = f"{options.snapshot} is a snapshot of {name}"
    elif options.config_drive is not None:
        name, transport = open_config_drive(options.config_drive, options.client.max_body)
        source = "a config drive is OpenStack's"
    else:
        return None
    if options.client.provider not in (providers.AUTO, name):
        raise ConfigError(f"{source}, not {options.client.provider}")
    return name, transport


@dataclass(frozen=True)
class _Setup:
    """Everything checked before mounting, and so before any fork."""

    options: MountOptions
    mountpoint: str
    provider: Provider
    policy: TtlPolicy
    transport: httpx.AsyncBaseTransport | None  # None: the network


def prepare_mountpoint(path: str) -> None:
    """Fail with one clear line, or leave *path* an empty-handed directory ready to mount on."""
    if not os.path.exists(_FUSE_DEVICE):
        raise MountError(f"{_FUSE_DEVICE} is missing: load the fuse module (modprobe fuse)")
    try:
        os.statvfs(path)  # unlike stat, never answered from the kernel's cache of a dead mount
    except OSError as exc:
        if exc.errno not in _STALE_ERRNOS:
            raise MountError(f"mountpoint {path}: {exc.strerror}") from None
        _clear_stale_mount(path)
    if not os.path.isdir(path):
        raise MountError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise MountError(f"{path} is already a mountpoint: unmount it first")


def _warn_if_nothing_answers(endpoint: str) -> None:
    """Say so when nothing accepts a connection at *endpoint*; mount anyway, since at boot IMDS
    may answer a moment later. A connection only (no request): IMDS is not charged for it."""
    url = httpx.URL(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.host, port), timeout=_PROBE_TIMEOUT):
            return
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    log.warning(
        "nothing answers at %s (%s); mounting anyway: reads fail until it does", endpoint, reason
    )


def _clear_stale_mount(path: str) -> None:
    """A crashed daemon leaves a mount whose every access fails (`_STALE_ERRNOS`)."""
    log.warning("clearing a stale mount at %s left by an earlier crash", path)
    result = subprocess.run(
        ["fusermount3", "-u", "-z", path], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise MountError(f"cannot clear the stale mount at {path}: {result.stderr.strip()}")


def _serve(setup: _Setup, ready: Callable[[], None]) -> None:
    options, mountpoint = setup.options, setup.mountpoint
    client = ImdsClient(options.client, provider=setup.provider, transport=setup.transport)
    cache = MetadataCache(client, setup.policy, stale_bound=options.stale_bound)
    read_ahead = max(1, options.client.max_concurrency // 2)  # leave readers half the slots
    tree = MetadataTree(cache, read_ahead_requests=read_ahead)
    operations = ImdsOperations(tree, options.fs)
    try:
        pyfuse3.init(operations, mountpoint, options.fuse_options())
    except RuntimeError:
        raise MountError(f"cannot mount on {mountpoint} (libfuse said why above)") from None
    log.info("mounted %s from %s", mountpoint, client.endpoint)
    faulthandler.register(signal.SIGUSR1)  # dump every thread's stack to debug a hang
    ready()
    systemd.notify(f"READY=1\nSTATUS=serving {client.endpoint} at {mountpoint}")
    try:
        trio.run(_run, client, operations, options, _mount_id(mountpoint))
    finally:
        # systemd keeps the last STATUS= after the unit stops: never leave "serving" there.
        systemd.notify(f"STOPPING=1\nSTATUS=stopping: unmounting {mountpoint}")
        pyfuse3.close(unmount=True)
        log.info("unmounted %s", mountpoint)
        systemd.notify(f"STATUS=stopped: unmounted {mountpoint}")


async def _run(
    client: ImdsClient, operations: ImdsOperations, options: MountOptions, mount_id: str | None
) -> None:
    tree = operations.tree
    async with client, trio.open_nursery() as nursery:
        nursery.start_soon(_handle_signals, tree.cache)
        nursery.start_soon(tree.cache.follow_changes)  # a no-op where the service has no feed
        nursery.start_soon(operations.watches.run)
        if mount_id is not None:
            nursery.start_soon(_end_when_detached, mount_id)
        tree.read_ahead_in(nursery)
        if options.prefetch:
            nursery.start_soon(_prefetch, tree)
        try:
            await pyfuse3.main(max_tasks=options.max_tasks)
        except* ConnectionAbortedError:
            # An unmount with requests still queued (the releases of many just-closed files)
            # ends the session this way rather than with ENODEV: the mount is gone either way.
            log.info("the kernel ended the FUSE session with requests in flight")
        log.debug("the FUSE session ended")
        nursery.cancel_scope.cancel()


def _mount_id(mountpoint: str) -> str | None:
    """The kernel's id of our mount at *mountpoint* (``/proc/self/mountinfo``), read without
    touching the mount itself, which this very process serves."""
    escaped = mount_table_path(mountpoint)
    found = None
    for fields in _mountinfo():
        if fields[4] == escaped and FS_TYPE in fields:
            found = fields[0]  # the last one: a mount stacked on an older one
    return found


def _mountinfo() -> list[list[str]]:
    try:
        with open("/proc/self/mountinfo") as file:
            return [line.split() for line in file]
    except OSError:
        return []


async def _end_when_detached(mount_id: str) -> None:
    """End the session once the mount is detached (``umount -l``, ``fusermount3 -u -z``).

    The kernel ends it by itself only when nothing holds the detached mount any more, which
    was seen to take up to 18 s with nothing visible holding it: a daemon lingering unseen
    after an unmount helps nobody (systemd, scripts and tests wait for it)."""
    while any(fields[0] == mount_id for fields in _mountinfo()):  # noqa: ASYNC110 (a poll)
        await trio.sleep(_DETACH_POLL)
    log.info("the mount was detached; ending the FUSE session")
    pyfuse3.terminate()


async def _prefetch(tree: MetadataTree) -> None:
    started = trio.current_time()
    files = await tree.crawl()
    log.info("prefetched %d files in %.2f s", files, trio.current_time() - started)


async def _handle_signals(cache: MetadataCache) -> None:
    """SIGTERM/SIGINT end the loop so the mount is released; SIGHUP drops the cache."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("SIGHUP: dropping cached metadata")
                cache.invalidate()
            else:
                log.info("%s: unmounting", signal.Signals(signum).name)
                pyfuse3.terminate()


def _serve_in_background(setup: _Setup) -> int:
    """Fork; the parent returns once the child reports the mount is up (what mount(8) needs)."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            return 0 if pipe.read(1) == b"1" else 1
    os.close(read_end)
    os.setsid()
    os.chdir("/")

    def ready() -> None:
        _log_in_background(setup.options.log_file)
        _detach_stdio()  # before answering: whoever started us may wait for our output to end
        os.write(write_end, b"1")
        os.close(write_end)

    try:
        _serve(setup, ready)
    except MountError as exc:
        log.error("%s", exc)
        os._exit(1)
    except BaseException:
        log.exception("imdsfs stopped on an unexpected error")
        os._exit(1)
    os._exit(0)


def _detach_stdio() -> None:
    """Let go of the terminal or pipe we were started from."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _log_in_background(log_file: str | None) -> None:
    """Send the log where a background mount's errors will be found: *log_file*, else syslog,
    else (no syslog daemon: containers, minimal systems) `default_log_file`. Never nowhere:
    the mount has already told its caller it is up, so its log is all that is left."""
    if log_file is None and _syslog_answers():
        handler: logging.Handler = logging.handlers.SysLogHandler(address=_SYSLOG_SOCKET)
        # syslog adds the time and takes the level as the priority: neither goes in the text.
        handler.setFormatter(logging.Formatter("imdsfs[%(process)d]: %(name)s: %(message)s"))
    else:
        path = Path(log_file or default_log_file())
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(
            logging.Formatter("%(asctime)s imdsfs[%(process)d] %(levelname)s %(name)s: %(message)s")
        )
        if log_file is None:
            print(f"imdsfs: no syslog at {_SYSLOG_SOCKET}; logging to {path}", file=sys.stderr)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)


def _syslog_answers() -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(_SYSLOG_SOCKET)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def default_log_file() -> str:
    """Where a background mount logs when there is no syslog: /var/log for root, else the
    user's state directory (XDG)."""
    if os.geteuid() == 0:
        return "/var/log/imdsfs.log"
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state, "imdsfs.log")
