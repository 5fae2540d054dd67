#!/usr/bin/env python3
"""``make systemd-test``: imdsfs under a real systemd, installed the way the README says.

A Debian bookworm root file system (debootstrap, cached) boots systemd as PID 1 of a
``systemd-nspawn`` container whose network namespace has nothing but loopback. In it the
checkout is installed with ``make install`` (offline: pip reads a wheelhouse built on the
host), ``imdsfs emulate`` serves 169.254.169.254:80 on the container's loopback (no request
can leave the container), and ``imdsfs.service`` is enabled. The container boots twice: the
systemd unit route first, then the README's /etc/fstab line. Every check prints PASS or FAIL
with what it saw; the exit status is 1 when any failed. Whatever happens, the container, its
processes, its cgroups and the overlay it ran on are removed; the cache stays.

Run as root, with the project's venv: ``make systemd-test``. The cache (root file system and
wheelhouse) lives in /var/cache/imdsfs-systemd-test, or $IMDSFS_SYSTEMD_TEST_CACHE, keyed on
the package list, scripts/bootstrap.sh and pyproject.toml; a changed key builds a new one and
removes the old. $IMDSFS_SYSTEMD_TEST_MIRROR overrides the Debian mirror (by default the one
the host's apt uses, else debootstrap's).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent.parent
SUITE = "bookworm"
# What the container needs to boot and to run `make install`. scripts/bootstrap.sh, run in
# the root file system while it is built (with the host's network), adds the rest.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "fuse3",
    "python3",
    "python3-venv",
    "iproute2",
    "make",
    "procps",
)
CACHE = Path(os.environ.get("IMDSFS_SYSTEMD_TEST_CACHE", "/var/cache/imdsfs-systemd-test"))
RUNS = Path("/var/tmp/imdsfs-systemd-test")  # one directory per run, removed at its end
LAST = RUNS / "last"  # the last run's container journals, kept for a look after a failure
CGROUP_NAME = "imdsfs-systemd-test"  # under the root of each cgroup hierarchy
MARKER = ".imdsfs-systemd-test"  # in a finished root file system: what it was built from
WHEELHOUSE = "/var/cache/imdsfs-wheelhouse"  # where the wheelhouse appears in the container
CHECKOUT_IN = "/opt/imdsfs"  # where the checkout is copied in the container
UNITS = ("imds-emulator.service", "imds-boot-reader.service", "imds-fstab-reader.service")
MOUNTPOINT = "/run/imds"
ENDPOINT = "http://169.254.169.254"
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FAILURE = re.compile(r"fail", re.IGNORECASE)
LOCK_WAIT = 1200.0  # another run holds the cache


class SetupError(Exception):
    """The test could not get as far as its checks; the message says where and why."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: stop, but tear down first."""


# --- output ----------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.started = time.monotonic()

    def check(self, name: str, ok: bool, saw: str) -> bool:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {saw}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        return ok

    def step(self, text: str) -> None:
        print(f"== [{time.monotonic() - self.started:6.1f} s] {text}", flush=True)

    def note(self, text: str) -> None:
        print(f"   {text}", flush=True)


def one_line(text: str, limit: int = 300) -> str:
    text = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


# --- processes -------------------------------------------------------------------------------


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    log: Path | None = None,
    cwd: Path | None = None,
    preexec: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run *argv* in a process group of its own, killed whole if it outlives *timeout*.

    With *log*, its output goes there (appended) instead of being returned.
    """
    out: BinaryIO | int = subprocess.PIPE
    if log is not None:
        out = log.open("ab")
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=preexec,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise SetupError(
                f"{' '.join(argv)[:200]}: still running after {timeout:.0f} s"
            ) from None
    finally:
        if not isinstance(out, int):
            out.close()
    result = subprocess.CompletedProcess(
        argv,
        process.returncode,
        (stdout or b"").decode(errors="replace"),
        (stderr or b"").decode(errors="replace"),
    )
    if check and result.returncode != 0:
        where = f"; see {log}:\n{tail(log)}" if log else f": {one_line(result.stderr)}"
        raise SetupError(f"{' '.join(argv)[:200]} exited {result.returncode}{where}")
    return result


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --- cgroups ---------------------------------------------------------------------------------


def cgroup_roots() -> list[Path]:
    """Where cgroup hierarchies that track processes are mounted: the unified one, and on a
    hybrid host systemd's named v1 hierarchy too (systemd-nspawn uses both)."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base]
    return [path for path in (base / "systemd", base / "unified") if path.is_dir()]


def remove_cgroup(path: Path, timeout: float = 10.0) -> str | None:
    """Kill what is left in the cgroup tree *path* (only this test's processes are there), then
    remove it, deepest first. None, or what could not be done."""
    if not path.exists():
        return None
    kill = path / "cgroup.kill"
    if kill.exists():
        with contextlib.suppress(OSError):
            kill.write_text("1")
    else:
        for procs in path.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)

    def gone() -> bool:
        for directory in sorted(
            (p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            path.rmdir()
        return not path.exists()

    if wait_for(gone, timeout, 0.2):
        return None
    return f"cgroup {path} still has processes or children"


# --- the cache -------------------------------------------------------------------------------


@contextlib.contextmanager
def cache_lock(report: Report) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        deadline = time.monotonic() + LOCK_WAIT
        told = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    report.note(f"another systemd-test run holds {CACHE}/.lock; waiting")
                    told = True
                if time.monotonic() > deadline:
                    raise SetupError(f"{CACHE}/.lock still held after {LOCK_WAIT:.0f} s") from None
                time.sleep(1)
        yield


def host_mirror() -> str | None:
    """The Debian mirror the host's apt uses for SUITE, if it uses one."""
    if os.environ.get("IMDSFS_SYSTEMD_TEST_MIRROR"):
        return os.environ["IMDSFS_SYSTEMD_TEST_MIRROR"]
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if re.match(r"^\w[\w-]*:", line)
            )
            uris = fields.get("URIs", "").split()
            if uris and SUITE in fields.get("Suites", "").split():
                return uris[0]
    with contextlib.suppress(OSError):
        for line in Path("/etc/apt/sources.list").read_text(errors="replace").splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    return None


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def collect_garbage(keep: set[str]) -> None:
    """Remove cached root file systems and wheelhouses of other keys, and unfinished ones."""
    for path in CACHE.iterdir():
        if path.name.startswith(("rootfs-", "wheels-")) and path.name not in keep:
            remove_tree(path)


def build_rootfs(report: Report, cgroups: list[Path]) -> Path:
    arch = run(["dpkg", "--print-architecture"], timeout=30).stdout.strip()
    bootstrap = (CHECKOUT / "scripts" / "bootstrap.sh").read_bytes()
    recipe = json.dumps({"suite": SUITE, "arch": arch, "packages": PACKAGES}, sort_keys=True)
    key = hashlib.sha256(recipe.encode() + bootstrap).hexdigest()[:12]
    path = CACHE / f"rootfs-{key}"
    if (path / MARKER).exists():
        report.note(f"root file system: cached at {path}")
        return path
    partial = CACHE / f"rootfs-{key}.partial"
    remove_tree(partial)
    log = CACHE / "build.log"
    log.write_text("")
    mirror = host_mirror()
    report.note(
        f"root file system: building {path} (debootstrap {SUITE} from "
        f"{mirror or 'debootstrap default mirror'}; log {log})"
    )
    started = time.monotonic()
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE]
    argv += [str(partial), *([mirror] if mirror else [])]
    try:
        run(argv, timeout=1800, log=log)
    except SetupError:
        raise SetupError(
            f"debootstrap failed; {log} ends:\n{tail(log)}\n"
            f"{partial}/debootstrap/debootstrap.log ends:\n"
            f"{tail(partial / 'debootstrap' / 'debootstrap.log')}"
        ) from None
    report.note(f"debootstrap: {time.monotonic() - started:.0f} s")
    # bootstrap.sh installs what `make venv` needs; in the container it will find it all
    # there, as it has no network.
    shutil.copy(CHECKOUT / "scripts" / "bootstrap.sh", partial / "root" / "bootstrap.sh")
    script = (
        "set -e; bash /root/bootstrap.sh; rm /root/bootstrap.sh; apt-get clean; "
        "rm -rf /var/lib/apt/lists/*; echo imdsfs-test > /etc/hostname"
    )
    nspawn = [
        "systemd-nspawn",
        "--quiet",
        f"--directory={partial}",
        f"--machine=imdsfs-build-{os.getpid()}",
        "--register=no",
        "--keep-unit",
        "--setenv=DEBIAN_FRONTEND=noninteractive",
        "--",
        "/bin/sh",
        "-c",
        script,
    ]
    run(nspawn, timeout=1200, log=log, preexec=lambda: join_cgroups(cgroups))
    (partial / MARKER).write_text(recipe + "\n" + f"bootstrap.sh sha256 {key}\n")
    partial.rename(path)
    report.note(f"root file system: built in {time.monotonic() - started:.0f} s")
    return path


def build_wheelhouse(report: Report) -> Path:
    """Wheels of everything `make install` asks pip for, built with the host's pip: the
    container installs from them with no index. Binary wheels need the same Python minor
    version in the container, which bookworm's 3.11 is."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    requirements = [
        *project["build-system"]["requires"],
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["test"],
        "pip",
    ]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    recipe = json.dumps([requirements, python, platform.machine()])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    path = CACHE / f"wheels-{key}"
    if (path / MARKER).exists():
        report.note(f"wheelhouse: cached at {path}")
        return path
    partial = CACHE / f"wheels-{key}.partial"
    remove_tree(partial)
    log = CACHE / "wheels.log"
    log.write_text("")
    started = time.monotonic()
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(partial)]
    run([*argv, *requirements], timeout=1200, log=log)
    (partial / MARKER).write_text(recipe + "\n")
    partial.rename(path)
    report.note(f"wheelhouse: built {path} in {time.monotonic() - started:.0f} s")
    return path


def container_python(rootfs: Path) -> str:
    target = os.readlink(rootfs / "usr" / "bin" / "python3")
    return target.removeprefix("python")


# --- the container ---------------------------------------------------------------------------


def join_cgroups(cgroups: list[Path]) -> None:
    """Run in the child before exec: nspawn then keeps its cgroups under ours (--keep-unit),
    not at the host's root, where they would outlive the test."""
    for cgroup in cgroups:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))


class Container:
    def __init__(self, run_dir: Path, rootfs: Path, wheels: Path, cgroups: list[Path]) -> None:
        self.run_dir = run_dir
        self.rootfs = rootfs
        self.root = run_dir / "root"
        self.wheels = wheels
        self.cgroups = cgroups
        self.machine = f"imdsfs-test-{os.getpid()}"
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.pid1 = 0
        self.boots = 0

    # The overlay: the cached root file system stays as built; the run writes elsewhere.

    def mount_overlay(self) -> None:
        for name in ("upper", "work", "root"):
            (self.run_dir / name).mkdir()
        options = (
            f"lowerdir={self.rootfs},upperdir={self.run_dir / 'upper'},"
            f"workdir={self.run_dir / 'work'}"
        )
        run(["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)], timeout=30)

    def nspawn_argv(self, *extra: str) -> list[str]:
        return [
            "systemd-nspawn",
            "--quiet",
            f"--directory={self.root}",
            f"--machine={self.machine}",
            # No systemd-machined on the host: don't register, and stay in our own cgroup.
            "--register=no",
            "--keep-unit",
            "--private-network",  # loopback only: IMDS traffic cannot leave the container
            "--bind=/dev/fuse",
            f"--bind-ro={self.wheels}:{WHEELHOUSE}",
            *extra,
        ]

    def run_offline(self, script: str, *, timeout: float, log: Path) -> None:
        """Run *script* in the container's file system, not booted (as when installing)."""
        argv = self.nspawn_argv(
            "--setenv=PIP_NO_INDEX=1",
            f"--setenv=PIP_FIND_LINKS={WHEELHOUSE}",
            "--setenv=PIP_DISABLE_PIP_VERSION_CHECK=1",
            f"--chdir={CHECKOUT_IN}",
            "--",
            "/bin/sh",
            "-c",
            script,
        )
        run(argv, timeout=timeout, log=log, preexec=lambda: join_cgroups(self.cgroups))

    def boot(self, timeout: float = 120) -> tuple[str, float]:
        """Boot; the state `systemctl is-system-running --wait` ends in, and the seconds."""
        self.boots += 1
        log = (self.run_dir / f"console-{self.boots}.log").open("wb")
        started = time.monotonic()
        self.nspawn = subprocess.Popen(
            self.nspawn_argv("--boot", "--console=pipe"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: join_cgroups(self.cgroups),
        )
        log.close()
        if not wait_for(self._find_pid1, 30):
            raise SetupError(f"no systemd in the container after 30 s: {self.console_tail()}")
        # systemctl fails until the manager listens, and says "offline" in the moment after
        # systemd's exec before it has made /run/systemd/system (a loaded machine shows it);
        # then --wait waits for the boot to end.
        deadline = started + timeout
        state = ""
        while state in ("", "offline") and time.monotonic() < deadline:
            left = max(1.0, deadline - time.monotonic())
            result = self.run("systemctl", "is-system-running", "--wait", timeout=left)
            state = result.stdout.strip()
            if state in ("", "offline"):
                time.sleep(0.2)
        return state or "(no answer)", time.monotonic() - started

    def _find_pid1(self) -> bool:
        assert self.nspawn is not None
        if self.nspawn.poll() is not None:
            raise SetupError(
                f"systemd-nspawn exited {self.nspawn.returncode}: " + self.console_tail()
            )
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if (
                    int(fields[1]) == self.nspawn.pid
                    and (entry / "comm").read_text() == "systemd\n"
                ):
                    self.pid1 = int(entry.name)
                    return True
        return False

    def console_tail(self) -> str:
        return one_line(tail(self.run_dir / f"console-{self.boots}.log", 10))

    def running(self) -> bool:
        return self.nspawn is not None and self.nspawn.poll() is None

    def poweroff(self, timeout: float = 60) -> int | None:
        """`systemctl poweroff` in the container; nspawn's exit status, None if it hung."""
        assert self.nspawn is not None
        with contextlib.suppress(SetupError, OSError):  # the journal, for a look afterwards
            journal = self.run("journalctl", "--boot", "--output=short-monotonic", timeout=30)
            (LAST / f"journal-boot{self.boots}.txt").write_text(journal.stdout)
        try:
            asked = self.run("systemctl", "poweroff", timeout=15).returncode == 0
        except SetupError:
            asked = False
        if not asked and self.pid1:  # systemd not listening (yet): its poweroff signal
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, signal.SIGRTMIN + 4)
        try:
            return self.nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """The container's PID 1 first (the kernel then kills its whole PID namespace), then
        systemd-nspawn."""
        if self.nspawn is None or self.nspawn.poll() is not None:
            return
        if self.pid1:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, signal.SIGKILL)
        try:
            self.nspawn.wait(10)
        except subprocess.TimeoutExpired:
            self.nspawn.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.nspawn.wait(10)

    # Commands in the booted container, through its namespaces (no machined: nsenter).

    def run(
        self, *argv: str, timeout: float = 30, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        if not self.running():
            raise SetupError("the container is not running")
        env = ["env", "-i", f"PATH={CONTAINER_PATH}", "LANG=C.UTF-8", "SYSTEMD_COLORS=0"]
        env.append("SYSTEMD_PAGER=cat")
        return run(
            ["nsenter", "-t", str(self.pid1), "-a", *env, *argv], timeout=timeout, check=check
        )

    def sh(self, script: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.run("/bin/sh", "-c", script, timeout=timeout)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        argv = ["systemctl", "show", unit, *(f"--property={p}" for p in properties)]
        lines = self.run(*argv, check=True).stdout.splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def state(self, unit: str) -> str:
        shown = self.show(unit, "ActiveState", "SubState")
        return f"{shown.get('ActiveState')} ({shown.get('SubState')})"

    def journal(self, *args: str) -> list[dict[str, Any]]:
        self.run("journalctl", "--sync", timeout=15)
        out = self.run("journalctl", "--no-pager", "--output=json", *args, check=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def cursor(self) -> str:
        entries = self.journal("--lines=1")
        return str(entries[-1]["__CURSOR"]) if entries else ""

    def since(
        self,
        cursor: str,
        *,
        unit: str | None = None,
        identifier: str | None = None,
        priority: int | None = None,
    ) -> list[dict[str, Any]]:
        """Entries after *cursor* (this boot's when it is empty), like journalctl's -u, -t and
        -p but filtered here: with a match, journalctl 252's --after-cursor also skips the
        first matching entry whenever the cursor's own entry does not match."""
        entries = self.journal(f"--after-cursor={cursor}" if cursor else "--boot")
        if unit is not None:
            entries = [e for e in entries if unit in (e.get("_SYSTEMD_UNIT"), e.get("UNIT"))]
        if identifier is not None:
            entries = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == identifier]
        if priority is not None:
            entries = [e for e in entries if int(e.get("PRIORITY", 6)) <= priority]
        return entries

    def start(self, verb: str, unit: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """`systemctl VERB UNIT` after `reset-failed`: the test starts imdsfs more often than
        the default start limit allows (5 starts in 10 s), which a user would not."""
        self.run("systemctl", "reset-failed", unit)
        return self.run("systemctl", verb, unit, timeout=timeout)

    def mounted(self) -> bool:
        mountinfo = self.run("cat", "/proc/self/mountinfo", check=True).stdout
        return any(line.split()[4] == MOUNTPOINT for line in mountinfo.splitlines())

    def imdsfs_processes(self) -> list[str]:
        """imdsfs daemons (not the emulator), as `PID ARGS` lines."""
        lines = self.run("ps", "-eo", "pid=,args=", check=True).stdout.splitlines()
        return [
            line.strip()
            for line in lines
            if "imdsfs" in line and "emulate" not in line and " ps " not in line
        ]

    def read(self, path: str, timeout: float = 30) -> tuple[bool, str]:
        result = self.run("cat", path, timeout=timeout)
        if result.returncode == 0:
            return True, result.stdout
        return False, one_line(result.stderr)


def message(entry: dict[str, Any]) -> str:
    value = entry.get("MESSAGE", "")
    if isinstance(value, list):  # journalctl's JSON for a message that is not UTF-8
        return bytes(value).decode(errors="replace")
    return str(value)


def show_entries(entries: list[dict[str, Any]], limit: int = 6) -> str:
    shown = [
        f"<{e.get('PRIORITY', '?')}> {e.get('SYSLOG_IDENTIFIER', '?')}: {message(e)}"
        for e in entries[:limit]
    ]
    more = f" (+{len(entries) - limit} more)" if len(entries) > limit else ""
    return " | ".join(shown) + more if shown else "nothing"


def failure_lines(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if FAILURE.search(message(e))]


# --- the checks ------------------------------------------------------------------------------


def expected_instance_id() -> str:
    document = json.loads((CHECKOUT / "imdsfs" / "emulator" / "default-instance.json").read_text())
    return str(document["meta-data"]["instance-id"])


def readme_fstab_line() -> str:
    """The fstab line the README gives, so that the test follows the README."""
    readme = (CHECKOUT / "README.md").read_text()
    match = re.search(r"^imds\s+/run/imds\s+fuse\.imdsfs\s.*$", readme, re.MULTILINE)
    if match is None:
        raise SetupError("README.md has no line 'imds /run/imds fuse.imdsfs ...' any more")
    return match.group(0).strip()


def wait_active(box: Container, unit: str, timeout: float = 20) -> bool:
    return wait_for(lambda: box.state(unit) == "active (running)", timeout, 0.2)


def check_network(report: Report, box: Container) -> None:
    links = box.run("ip", "-o", "link", "show", check=True).stdout
    names = [line.split(":")[1].strip() for line in links.splitlines()]
    addresses = box.run("ip", "-o", "-4", "address", "show", "dev", "lo", check=True).stdout
    has_imds = "169.254.169.254/32" in addresses
    report.check(
        "network: loopback only, IMDS's address on it",
        names == ["lo"] and has_imds,
        f"links {names}; 169.254.169.254 on lo: {has_imds}",
    )


def check_service_running(report: Report, box: Container, instance_id: str) -> None:
    shown = box.show("imdsfs", "ActiveState", "SubState", "StatusText", "MainPID", "Type")
    status = box.run("systemctl", "status", "--no-pager", "--lines=0", "imdsfs").stdout
    expected = f"serving {ENDPOINT} at {MOUNTPOINT}"
    ok = (
        shown.get("ActiveState") == "active"
        and shown.get("SubState") == "running"
        and shown.get("StatusText") == expected
        and "Active: active (running)" in status
        and f'Status: "{expected}"' in status
    )
    report.check(
        "unit: active (running) with its status line",
        ok,
        f"{shown.get('ActiveState')} ({shown.get('SubState')}), Type={shown.get('Type')}, "
        f'StatusText="{shown.get("StatusText")}"',
    )
    good, text = box.read(f"{MOUNTPOINT}/instance-id")
    report.check("unit: the mount answers", good and text == instance_id, f"instance-id: {text}")


def check_boot_reader(
    report: Report, box: Container, unit: str, after: str, instance_id: str
) -> None:
    shown = box.show(unit, "ActiveState", "Result", "ExecMainStartTimestampMonotonic")
    output = [message(e) for e in box.since("", unit=unit) if e.get("_PID") != "1"]
    started = int(shown.get("ExecMainStartTimestampMonotonic") or 0)
    ready = int(
        box.show(after, "ActiveEnterTimestampMonotonic")["ActiveEnterTimestampMonotonic"] or 0
    )
    ok = (
        shown.get("Result") == "success"
        and f"instance-id={instance_id}" in output
        and 0 < ready <= started
    )
    report.check(
        f"boot: {unit} (as nobody) read {MOUNTPOINT}/instance-id",
        ok,
        f"Result={shown.get('Result')}, it printed {output}, it started "
        f"{(started - ready) / 1000:.0f} ms after {after} became active",
    )


def check_clean_log(report: Report, box: Container, name: str, cursor: str, unit: str) -> None:
    entries = box.since(cursor, unit=unit)
    status = box.run("systemctl", "status", "--no-pager", "--lines=0", unit).stdout
    bad_status = [line.strip() for line in status.splitlines() if "FAILURE" in line]
    bad = failure_lines(entries)
    report.check(
        name,
        not bad and not bad_status,
        f"{len(entries)} journal lines, failure lines: {show_entries(bad)}; "
        f"status: {bad_status or 'no FAILURE'}",
    )


def fetches(box: Container) -> int:
    """How many values the daemon has fetched from IMDS (`imdsfs stats`)."""
    result = box.run("imdsfs", "stats", "--json", MOUNTPOINT, check=True)
    return int(json.loads(result.stdout)["fetches"])


def check_reload(report: Report, box: Container) -> None:
    """instance-id is cached for 6 hours: a lookup (getfattr) costs no fetch, until a reload
    drops the cache."""
    describe = ["getfattr", "--only-values", "--name=user.imds.fetched_at"]
    describe.append(f"{MOUNTPOINT}/instance-id")
    box.run(*describe, check=True)
    before = fetches(box)
    box.run(*describe, check=True)
    cached = fetches(box)
    cursor = box.cursor()
    reloaded = box.run("systemctl", "reload", "imdsfs")
    logged = wait_for(
        lambda: any("SIGHUP" in message(e) for e in box.since(cursor, unit="imdsfs.service")),
        10,
        0.3,
    )
    box.run(*describe, check=True)
    after = fetches(box)
    report.check(
        "reload: drops the cache",
        reloaded.returncode == 0 and logged and cached == before and after > cached,
        f"fetches: {before}, {cached} after a cached lookup, {after} after reload and lookup; "
        f"SIGHUP logged: {logged}",
    )


def check_stop(report: Report, box: Container) -> None:
    cursor = box.cursor()
    stopped = box.run("systemctl", "stop", "imdsfs", timeout=30)
    shown = box.show("imdsfs", "ActiveState", "Result", "StatusText", "MainPID")
    left = box.imdsfs_processes()
    mounted = box.mounted()
    status = shown.get("StatusText", "")
    report.check(
        "stop: unmounts, no daemon left",
        stopped.returncode == 0
        and shown.get("ActiveState") == "inactive"
        and shown.get("Result") == "success"
        and not mounted
        and not left,
        f"systemctl stop exited {stopped.returncode}, {shown.get('ActiveState')}, "
        f"Result={shown.get('Result')}, mounted: {mounted}, imdsfs processes: {left or 'none'}",
    )
    report.check(
        "stop: clears the status line", not status.startswith("serving"), f'StatusText="{status}"'
    )
    check_clean_log(report, box, "stop: no failure lines", cursor, "imdsfs.service")


def check_start_stop_cycle(report: Report, box: Container, instance_id: str) -> None:
    cursor = box.cursor()
    started = box.start("start", "imdsfs.service")
    good, text = box.read(f"{MOUNTPOINT}/instance-id")
    stopped = box.run("systemctl", "stop", "imdsfs", timeout=30)
    report.check(
        "cycle: start, read, stop",
        started.returncode == 0 and good and text == instance_id and stopped.returncode == 0,
        f"start exited {started.returncode}, read {text!r}, stop exited {stopped.returncode}",
    )
    check_clean_log(
        report, box, "cycle: no failure lines for a clean start/stop", cursor, "imdsfs.service"
    )
    box.start("start", "imdsfs.service")


def check_restart(report: Report, box: Container, instance_id: str) -> None:
    before = box.show("imdsfs", "MainPID")["MainPID"]
    cursor = box.cursor()
    restarted = box.start("restart", "imdsfs.service")
    after = box.show("imdsfs", "MainPID", "StatusText")
    good, text = box.read(f"{MOUNTPOINT}/instance-id")
    report.check(
        "restart: a new daemon serves",
        restarted.returncode == 0
        and after["MainPID"] not in ("0", before)
        and box.state("imdsfs") == "active (running)"
        and good
        and text == instance_id,
        f"MainPID {before} -> {after['MainPID']}, {box.state('imdsfs')}, read {text!r}, "
        f'StatusText="{after.get("StatusText")}"',
    )
    check_clean_log(report, box, "restart: no failure lines", cursor, "imdsfs.service")


def check_sigkill(report: Report, box: Container, instance_id: str) -> None:
    before = box.show("imdsfs", "MainPID", "NRestarts")
    cursor = box.cursor()
    box.run("systemctl", "kill", "--kill-who=main", "--signal=SIGKILL", "imdsfs", check=True)
    # Between the death and the restart (RestartSec=), the dead mount must already be gone.
    seen: list[str] = []
    mounted_while_waiting: list[bool] = []

    def restarted() -> bool:
        state = box.state("imdsfs")
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == "activating (auto-restart)":
            mounted_while_waiting.append(box.mounted())
        main = box.show("imdsfs", "MainPID")["MainPID"]
        return state == "active (running)" and main not in ("0", before["MainPID"])

    back = wait_for(restarted, 30, 0.05)
    after = box.show("imdsfs", "MainPID", "NRestarts", "StatusText")
    good, text = box.read(f"{MOUNTPOINT}/instance-id")
    report.check(
        "SIGKILL: Restart= brings it back",
        back
        and int(after["NRestarts"]) == int(before["NRestarts"]) + 1
        and good
        and text == instance_id,
        f"states {' -> '.join(seen)}; MainPID {before['MainPID']} -> {after['MainPID']}, "
        f"NRestarts {before['NRestarts']} -> {after['NRestarts']}, read {text!r}",
    )
    entries = box.since(cursor, unit="imdsfs.service")
    cleared_by_imdsfs = any("clearing a stale mount" in message(e) for e in entries)
    report.check(
        "SIGKILL: the dead mount is cleared before the restart",
        bool(mounted_while_waiting) and not any(mounted_while_waiting),
        f"{MOUNTPOINT} mounted while waiting to restart: "
        f"{mounted_while_waiting or 'never sampled'}; "
        f"imdsfs had to clear a stale mount itself: {cleared_by_imdsfs}",
    )


def check_warning_priorities(report: Report, box: Container, instance_id: str) -> None:
    """An IMDS that does not answer: imdsfs warns at start, and reads fail with warnings."""
    box.run("systemctl", "stop", "imds-emulator", check=True)
    cursor = box.cursor()
    restarted = box.start("restart", "imdsfs.service")
    failed_read, text = box.read(f"{MOUNTPOINT}/hostname", timeout=30)
    entries = [e for e in box.since(cursor, unit="imdsfs.service") if e.get("_PID") != "1"]
    warnings = [e for e in entries if e.get("PRIORITY") == "4"]
    prefixed = [e for e in entries if re.match(r"<\d>", message(e))]
    start_warning = [e for e in warnings if "nothing answers at" in message(e)]
    by_priority = box.since(cursor, unit="imdsfs.service", priority=4)
    report.check(
        "journal: warnings carry priority 4 (service route)",
        restarted.returncode == 0
        and bool(start_warning)
        and not prefixed
        and not failed_read
        and bool(by_priority),
        f"restart exited {restarted.returncode}; read with IMDS down: {text}; "
        f"{len(warnings)} warning entries of {len(entries)}: "
        f"{show_entries(warnings, 3)}; entries with a literal <N>: {len(prefixed)}",
    )
    report.note(f"IMDS down for one read of one file: {len(warnings)} warning lines in the journal")
    box.run("systemctl", "start", "imds-emulator", check=True)
    back = wait_for(lambda: box.read(f"{MOUNTPOINT}/instance-id")[1] == instance_id, 20, 0.5)
    report.check(
        "journal: reads work again once IMDS is back", back, f"instance-id readable: {back}"
    )


def check_config_error(report: Report, box: Container) -> None:
    box.run("sh", "-c", "echo 'IMDSFS_OPTS=\"--ttl bogus\"' > /etc/default/imdsfs", check=True)
    cursor = box.cursor()
    started = box.start("restart", "imdsfs.service")
    restart_sec = 2.0
    # Long enough for a restart loop to show itself (RestartSec=2): it must not.
    samples: list[str] = []

    def sample() -> bool:
        state = box.state("imdsfs")
        if not samples or samples[-1] != state:
            samples.append(state)
        return False

    wait_for(sample, restart_sec * 3, 0.2)
    shown = box.show("imdsfs", "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    report.check(
        "config error: ends in failed, no restart loop",
        started.returncode != 0
        and shown.get("ActiveState") == "failed"
        and shown.get("ExecMainStatus") == "2"
        and shown.get("NRestarts") == "0",
        f"systemctl restart exited {started.returncode}; states {' -> '.join(samples)}; "
        f"Result={shown.get('Result')}, ExecMainStatus={shown.get('ExecMainStatus')}, "
        f"NRestarts={shown.get('NRestarts')}",
    )
    errors = box.since(cursor, unit="imdsfs.service", priority=3)
    own = [e for e in errors if e.get("_PID") != "1" and "bogus" in message(e)]
    report.check(
        "config error: its message is in journalctl -p err",
        bool(own),
        f"journalctl -u imdsfs -p err shows: {show_entries(errors)}",
    )
    box.run("rm", "-f", "/etc/default/imdsfs", check=True)
    box.run("systemctl", "reset-failed", "imdsfs")
    box.start("start", "imdsfs.service")
    report.check(
        "config error: starts again once fixed",
        wait_active(box, "imdsfs"),
        f"{box.state('imdsfs')}",
    )


def check_fstab_boot(report: Report, box: Container, instance_id: str, line: str) -> None:
    unit = "run-imds.mount"
    shown = box.show(unit, "ActiveState", "SubState", "SourcePath", "FragmentPath")
    findmnt = box.run("findmnt", "--noheadings", "--output=FSTYPE,OPTIONS", MOUNTPOINT).stdout
    service = box.state("imdsfs")
    report.check(
        f"fstab: the README line mounts at boot through {unit}",
        shown.get("ActiveState") == "active"
        and shown.get("SubState") == "mounted"
        and shown.get("SourcePath") == "/etc/fstab"
        and shown.get("FragmentPath", "").startswith("/run/systemd/generator/")
        and findmnt.split()[:1] == ["fuse.imdsfs"]
        and service.startswith("inactive"),
        f"'{line}' -> {shown.get('ActiveState')} ({shown.get('SubState')}) from "
        f"{shown.get('SourcePath')} by {shown.get('FragmentPath')}; findmnt: {one_line(findmnt)}; "
        f"imdsfs.service {service}",
    )


def daemon_pid(box: Container) -> str:
    processes = box.imdsfs_processes()
    return processes[0].split()[0] if processes else ""


def check_syslog_lines(report: Report, box: Container, instance_id: str) -> None:
    """The daemonized mount logs through syslog (/dev/log is journald's): identifier, pid,
    logger name and a journal priority."""
    pid = daemon_pid(box)
    box.run("systemctl", "stop", "imds-emulator", check=True)
    cursor = box.cursor()
    failed_read, text = box.read(f"{MOUNTPOINT}/hostname", timeout=30)
    box.run("systemctl", "start", "imds-emulator", check=True)
    wait_for(lambda: box.read(f"{MOUNTPOINT}/instance-id")[1] == instance_id, 20, 0.5)
    entries = box.since(cursor, identifier="imdsfs")
    warnings = [e for e in entries if e.get("PRIORITY") == "4"]
    well_formed = [
        e
        for e in warnings
        if re.match(r"imdsfs(\.\w+)+: ", message(e)) and e.get("SYSLOG_PID") == pid
    ]
    level_words = [e for e in entries if re.match(r"(DEBUG|INFO|WARNING|ERROR)\b", message(e))]
    report.check(
        "fstab: syslog lines are 'imdsfs[pid]: logger: message' at priority 4",
        not failed_read
        and bool(warnings)
        and len(well_formed) == len(warnings)
        and not level_words,
        f"daemon pid {pid}; read with IMDS down: {text}; {len(warnings)} warnings, "
        f"{len(well_formed)} well formed: {show_entries(warnings, 3)}; "
        f"lines starting with a level word: {len(level_words)}",
    )
    report.note(f"IMDS down for one read of one file: {len(warnings)} warning lines (syslog)")


def check_fstab_stop(report: Report, box: Container) -> None:
    unit = "run-imds.mount"
    pid = daemon_pid(box)
    cursor = box.cursor()
    stopped = box.run("systemctl", "stop", unit, timeout=30)
    gone = wait_for(lambda: not box.imdsfs_processes(), 10, 0.2)
    entries = box.since(cursor)
    unmounted = [e for e in entries if message(e) == f"imdsfs._mount: unmounted {MOUNTPOINT}"]
    killed = [e for e in entries if re.search(r"[Kk]illing|left-over|SIGKILL", message(e))]
    report.check(
        f"fstab: systemctl stop {unit} unmounts, the daemon exits by itself",
        stopped.returncode == 0
        and box.state(unit).startswith("inactive")
        and not box.mounted()
        and gone
        and bool(unmounted)
        and not killed,
        f"stop exited {stopped.returncode}, {box.state(unit)}, mounted: {box.mounted()}, "
        f"daemon {pid} gone: {gone}, its last line: {show_entries(unmounted, 1)}, "
        f"systemd had to kill: {show_entries(killed)}",
    )
    # umount returns as the kernel detaches the mount; the daemon exits a moment later.
    remains = [e for e in entries if "remains running" in message(e)]
    if remains:
        report.note(f"journal: {show_entries(remains)}")
    bad = failure_lines(entries)
    report.check("fstab: no failure lines on stop", not bad, show_entries(bad))


# --- the run ---------------------------------------------------------------------------------


def copy_checkout(destination: Path) -> int:
    """The files git knows of (tracked, and new ones not ignored): no .venv, no caches."""
    listing = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        timeout=60,
        cwd=CHECKOUT,
    ).stdout
    count = 0
    for name in filter(None, listing.split("\0")):
        source = CHECKOUT / name
        if not source.is_file():
            continue  # deleted in the work tree
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        count += 1
    return count


def boot_and_wait(report: Report, box: Container, name: str) -> None:
    state, seconds = box.boot()
    failed = box.run("systemctl", "list-units", "--failed", "--plain", "--no-legend").stdout
    report.check(
        f"{name}: boots to 'running'",
        state == "running",
        f"'{state}' after {seconds:.1f} s; failed units: {one_line(failed) or 'none'}",
    )


def session(report: Report, run_dir: Path, cgroups: list[Path], boxes: list[Container]) -> None:
    """Everything but the teardown; *boxes* gets the container as soon as there is one."""
    report.step("cache")
    with cache_lock(report):
        rootfs = build_rootfs(report, cgroups)
        wheels = build_wheelhouse(report)
        collect_garbage({rootfs.name, wheels.name, ".lock", "build.log", "wheels.log"})
    inside, outside = container_python(rootfs), f"{sys.version_info.major}.{sys.version_info.minor}"
    if inside != outside:
        raise SetupError(
            f"the container has Python {inside}, the host venv {outside}: the wheelhouse's "
            f"binary wheels would not install; run with a Python {inside} venv"
        )
    box = Container(run_dir, rootfs, wheels, cgroups)
    boxes.append(box)
    box.mount_overlay()
    (run_dir / "state.json").write_text(json.dumps({"machine": box.machine}))

    report.step("install: make install in the container (offline, from the wheelhouse)")
    files = copy_checkout(box.root / CHECKOUT_IN.lstrip("/"))
    for unit in UNITS:
        shutil.copy(HERE / unit, box.root / "etc" / "systemd" / "system" / unit)
    started = time.monotonic()
    log = run_dir / "install.log"
    box.run_offline(
        "set -e; make install; "
        "systemctl enable imdsfs.service imds-emulator.service imds-boot-reader.service",
        timeout=900,
        log=log,
    )
    link = os.readlink(box.root / "usr" / "local" / "bin" / "imdsfs")
    unit_file = (box.root / "etc" / "systemd" / "system" / "imdsfs.service").is_file()
    report.check(
        "install: make install",
        link == f"{CHECKOUT_IN}/.venv/bin/imdsfs" and unit_file,
        f"{files} files copied, /usr/local/bin/imdsfs -> {link}, unit installed: {unit_file}, "
        f"{time.monotonic() - started:.0f} s",
    )
    instance_id = expected_instance_id()

    report.step("boot 1: imdsfs.service enabled (the systemd route)")
    boot_and_wait(report, box, "boot 1")
    check_network(report, box)
    check_service_running(report, box, instance_id)
    check_boot_reader(report, box, "imds-boot-reader.service", "imdsfs.service", instance_id)
    check_clean_log(report, box, "boot: no failure lines for imdsfs", "", "imdsfs.service")
    check_reload(report, box)
    check_stop(report, box)
    check_start_stop_cycle(report, box, instance_id)
    check_restart(report, box, instance_id)
    check_sigkill(report, box, instance_id)
    check_warning_priorities(report, box, instance_id)
    check_config_error(report, box)

    report.step("boot 2: the README's /etc/fstab line instead (the fstab route)")
    line = readme_fstab_line()
    box.run("systemctl", "disable", "imdsfs.service", "imds-boot-reader.service", check=True)
    box.run("systemctl", "enable", "imds-fstab-reader.service", check=True)
    box.sh(f"echo '{line}' >> /etc/fstab")
    cursor = box.cursor()
    status = box.poweroff()
    report.check("boot 1: powers off", status == 0, f"systemd-nspawn exited {status}")
    if status is None:
        box.kill()
    boot_and_wait(report, box, "boot 2")
    shutdown = box.since(cursor, unit="imdsfs.service")
    bad = failure_lines(shutdown)
    report.check("boot 1: imdsfs stopped cleanly at poweroff", not bad, show_entries(bad))
    check_fstab_boot(report, box, instance_id, line)
    check_boot_reader(report, box, "imds-fstab-reader.service", "run-imds.mount", instance_id)
    check_syslog_lines(report, box, instance_id)
    check_fstab_stop(report, box)


def teardown(report: Report, box: Container | None, run_dir: Path, cgroups: list[Path]) -> None:
    """Stop the container, kill what is left, remove cgroups, overlay and the run directory.
    Each step runs whatever the one before did; problems are reported as failures."""
    report.step("teardown")
    problems: list[str] = []
    if box is not None and box.running():
        status = box.poweroff(timeout=30)
        if status is None:
            problems.append("the container did not power off in 30 s: killed")
            box.kill()
    for cgroup in cgroups:
        problem = remove_cgroup(cgroup)
        if problem:
            problems.append(problem)
        with contextlib.suppress(OSError):  # empty unless another run is going on
            cgroup.parent.rmdir()
    problems += remove_run_dir(run_dir)
    report.check(
        "teardown: container, cgroups, mounts and files removed",
        not problems,
        "; ".join(problems) or f"nothing left of {run_dir}",
    )


def remove_run_dir(run_dir: Path) -> list[str]:
    problems = []
    root = run_dir / "root"
    with contextlib.suppress(OSError):
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        # Deepest first: anything mounted under the overlay, then the overlay.
        targets = sorted(
            (line.split()[4] for line in mounts if line.split()[4].startswith(str(run_dir))),
            key=len,
            reverse=True,
        )
        for target in targets:
            result = run(["umount", target], timeout=30, check=False)
            if result.returncode != 0:
                problems.append(f"umount {target}: {one_line(result.stderr)}; lazily then")
                run(["umount", "--lazy", target], timeout=30, check=False)
    with contextlib.suppress(OSError):
        (
            Path("/run/systemd/nspawn/propagate")
            / f"imdsfs-test-{run_dir.name.removeprefix('run-')}"
        ).rmdir()
    if root.exists() and os.path.ismount(root):
        problems.append(f"{root} still mounted: left in place")
        return problems
    remove_tree(run_dir)
    return problems


def sweep_stale_runs(report: Report) -> None:
    """A run that was killed (SIGKILL, a lost machine) left its directory: finish its teardown."""
    for run_dir in sorted(RUNS.glob("run-*")) if RUNS.is_dir() else []:
        pid = run_dir.name.removeprefix("run-")
        if pid.isdigit() and Path(f"/proc/{pid}").exists() and int(pid) != os.getpid():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"systemd-test" in cmdline:
                continue  # a run in progress (it waits on the cache lock)
        report.note(f"cleaning up after an earlier run: {run_dir}")
        for root in cgroup_roots():
            remove_cgroup(root / CGROUP_NAME / run_dir.name)
        for problem in remove_run_dir(run_dir):
            report.note(problem)


def main() -> int:
    report = Report()
    if os.geteuid() != 0:
        print("systemd-test: run as root (it debootstraps, mounts and boots a container)")
        return 2
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            print(f"systemd-test: {tool} is missing: scripts/systemd-test/host-deps.sh installs it")
            return 2

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    RUNS.mkdir(parents=True, exist_ok=True)
    sweep_stale_runs(report)
    run_dir = RUNS / f"run-{os.getpid()}"
    run_dir.mkdir()
    remove_tree(LAST)
    LAST.mkdir()
    cgroups = [root / CGROUP_NAME / run_dir.name for root in cgroup_roots()]
    for cgroup in cgroups:
        cgroup.mkdir(parents=True)
    boxes: list[Container] = []
    try:
        session(report, run_dir, cgroups, boxes)
    except SetupError as exc:
        report.check("setup", False, str(exc))
    except (Interrupted, KeyboardInterrupt) as exc:
        report.check("interrupted", False, f"{type(exc).__name__} {exc}".strip())
    except Exception as exc:  # a bug here must not skip the teardown
        report.check("harness", False, f"{type(exc).__name__}: {exc}")
        import traceback

        traceback.print_exc()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        teardown(report, boxes[0] if boxes else None, run_dir, cgroups)
    elapsed = time.monotonic() - report.started
    usage = run(["du", "-sh", str(CACHE)], timeout=120, check=False).stdout.split()
    print(f"== {elapsed:.0f} s in all; cache {usage[0] if usage else '?'} in {CACHE}")
    if report.failed:
        print("failed: " + ", ".join(report.failed))
        print(f"the container's journal of each boot: {LAST}/journal-boot*.txt")
    print(f"systemd-test: {report.passed} passed, {len(report.failed)} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
