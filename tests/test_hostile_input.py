"""A hostile or broken IMDS, served by the emulator's ``set_raw``, seen through a real mount.

Whatever IMDS sends, the daemon must stay up, no name may lead out of the mount, no reader
may wait past the deadline, and each problem is logged once with the IMDS path. The daemon's
log is also checked for tracebacks at teardown (``make_mount``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imdsfs.emulator import Emulator

from .conftest import Mounted

DEADLINE = 2.0
MARGIN = 1.0  # hang guard: scheduling and process start-up, not a performance target
# Short TTLs, so a test sees IMDS's next answer without waiting for the defaults.
FAST = ("--deadline", str(DEADLINE), "--ttl", "**=0.2", "--ttl", "negative=0.2")
MiB = 1 << 20

MakeMount = Callable[..., Mounted]


def timed_errno(operation: Callable[[], object]) -> tuple[int | None, float]:
    """(errno or None on success, seconds taken) of one operation on the mount."""
    started = time.monotonic()
    try:
        operation()
    except OSError as exc:
        return exc.errno, time.monotonic() - started
    return None, time.monotonic() - started


def warnings_about(mounted: Mounted, imds_path: str) -> list[str]:
    return [
        line
        for line in mounted.log().splitlines()
        if " WARNING " in line and f"/latest/{imds_path}" in line
    ]


def assert_alive(mounted: Mounted) -> None:
    assert mounted.process.poll() is None, mounted.log()
    os.statvfs(mounted.path)  # answered by the daemon itself


# --- listings ---------------------------------------------------------------------------------

TAGS = "meta-data/tags/instance/"
HOSTILE_NAMES = [
    b".",
    b"..",
    b"./",
    b"../",
    b"",  # an empty line inside the listing
    b"a/b",
    b"../../../etc/passwd",
    b"nul\0name",
    b"x" * 300,
    b"\xff\xfe-not-utf8",
    b"query?x",
    b"percent%2e%2e",
    b"back\\slash",
    b"tab\tname",
]
# 12 distinct unusable names ("./" and "../" repeat "." and ".."), plus the duplicates "dup"
# and "both/".
EXPECTED_WARNINGS = 14


def hostile_listing() -> bytes:
    return b"\n".join([b"good", b"dup", *HOSTILE_NAMES, b"dup", b"both", b"both/"])


def test_a_hostile_listing_shows_only_usable_names_each_warned_once(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    for name in ("good", "dup", "both"):
        emulator.set(f"{TAGS}{name}", f"value of {name}")
    emulator.set_raw(TAGS, hostile_listing())
    mounted = make_mount(emulator, *FAST)
    tags = mounted.path / "tags" / "instance"
    for _ in range(3):  # the listing is fetched and parsed again each time (TTL 0.2 s)
        assert sorted(os.listdir(tags)) == ["both", "dup", "good"]
        for name in ("good", "dup", "both"):  # "both" is the leaf: the first entry wins
            assert (tags / name).read_bytes() == f"value of {name}".encode()
        time.sleep(0.3)
    assert emulator.counters.count(method="GET", path=f"/latest/{TAGS}") >= 3
    skipped = [line for line in warnings_about(mounted, TAGS) if "skipping entry" in line]
    assert len(skipped) == EXPECTED_WARNINGS, "\n".join(skipped)
    assert_alive(mounted)


def test_no_listed_name_leads_out_of_the_mount(make_mount: MakeMount, emulator: Emulator) -> None:
    emulator.set_raw(
        "meta-data/public-keys/",
        b"0=good-key\n1=../../etc\n0=..\n0=/abs\n2=.\n../3=x\n4=a/b",
    )
    mounted = make_mount(emulator, *FAST)
    keys = mounted.path / "public-keys"
    assert sorted(os.listdir(keys)) == ["0", "1", "2", "4", "good-key"]
    assert os.readlink(keys / "good-key") == "0"
    for directory, subdirs, files in os.walk(mounted.path, followlinks=True):
        for name in [*subdirs, *files]:
            path = Path(directory, name)
            assert Path(os.path.realpath(path)).is_relative_to(mounted.path), path
            if path.is_symlink():
                assert re.fullmatch(r"\d+", os.readlink(path)), path
    assert_alive(mounted)


# --- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
def test_a_10_mib_value_is_efbig_fast_and_logged_once(
    make_mount: MakeMount, emulator: Emulator, declared: bool
) -> None:
    emulator.set_raw("meta-data/ami-id", b"x" * (10 * MiB), endless=not declared)
    mounted = make_mount(emulator, *FAST)
    for _ in range(3):
        error, seconds = timed_errno(lambda: (mounted.path / "ami-id").read_bytes())
        assert error == errno.EFBIG
        assert seconds < DEADLINE + MARGIN
        time.sleep(0.3)
    assert len(warnings_about(mounted, "meta-data/ami-id")) == 1, mounted.log()
    # The rest of the tree is unaffected.
    assert (mounted.path / "instance-id").read_bytes() == emulator.get_bytes(
        "meta-data/instance-id"
    )
    assert "ami-id" in os.listdir(mounted.path)
    assert_alive(mounted)


def test_binary_and_non_utf8_values_are_served_byte_for_byte(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    value = bytes(range(256)) + b"\xff\xfe\x00\r\n"
    emulator.set(f"{TAGS}binary", value)
    mounted = make_mount(emulator, *FAST)
    assert (mounted.path / "tags/instance/binary").read_bytes() == value
    assert (mounted.path / "tags/instance/binary").stat().st_size == len(value)


def test_an_html_page_with_200_is_never_served_as_a_value(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    html = b"<html><body>Please sign in to the network</body></html>"
    mounted = make_mount(emulator, *FAST)
    instance_id = emulator.get_bytes("meta-data/instance-id")
    placement = sorted(os.listdir(mounted.path / "placement"))
    assert (mounted.path / "instance-id").read_bytes() == instance_id
    for path in ("meta-data/instance-id", "meta-data/placement/", "meta-data/ami-id"):
        emulator.set_raw(path, html, content_type="text/html; charset=utf-8")
    time.sleep(0.3)  # past the TTL: the next reads ask IMDS and get the page
    for _ in range(3):
        assert (mounted.path / "instance-id").read_bytes() == instance_id  # the last good one
        assert sorted(os.listdir(mounted.path / "placement")) == placement
        error, seconds = timed_errno(lambda: (mounted.path / "ami-id").read_bytes())
        assert error == errno.EIO  # nothing good to fall back on
        assert seconds < DEADLINE + MARGIN
    for path in ("meta-data/instance-id", "meta-data/placement/", "meta-data/ami-id"):
        assert len(warnings_about(mounted, path)) == 1, mounted.log()
        assert "HTML" in warnings_about(mounted, path)[0]
    assert_alive(mounted)


# --- slow and endless answers -----------------------------------------------------------------


def test_a_listing_that_never_ends_is_eio_within_the_deadline(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    emulator.set_raw("meta-data/network/", b"interfaces/\n", trickle=0.05, endless=True)
    mounted = make_mount(emulator, *FAST)
    error, seconds = timed_errno(lambda: os.listdir(mounted.path / "network"))
    assert error == errno.EIO
    assert DEADLINE * 0.8 < seconds < DEADLINE + MARGIN
    # Within the hold-off the failure is answered at once, not waited for again.
    error, seconds = timed_errno(lambda: os.listdir(mounted.path / "network"))
    assert error == errno.EIO
    assert seconds < 0.5
    time.sleep(0.5)  # the request itself ends (and warns) at its own deadline, just after
    assert len(warnings_about(mounted, "meta-data/network/")) == 1, mounted.log()
    assert_alive(mounted)


def test_a_value_that_starts_trickling_is_served_stale_within_the_deadline(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    mounted = make_mount(emulator, *FAST)
    region = emulator.get_bytes("meta-data/placement/region")
    assert (mounted.path / "placement/region").read_bytes() == region
    emulator.set_raw("meta-data/placement/region", b"eu-west-1", trickle=1.0)
    time.sleep(0.3)
    started = time.monotonic()
    for _ in range(5):
        assert (mounted.path / "placement/region").read_bytes() == region
    assert time.monotonic() - started < DEADLINE + MARGIN  # one wait, then the hold-off
    assert_alive(mounted)


def test_a_token_request_that_never_ends_is_eio_within_the_deadline(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    emulator.set_raw("api/token", b"A", trickle=0.05, endless=True)
    mounted = make_mount(emulator, *FAST)  # mounting itself needs no IMDS
    for _ in range(2):
        error, seconds = timed_errno(lambda: (mounted.path / "ami-id").read_bytes())
        assert error == errno.EIO
        assert seconds < DEADLINE + MARGIN
    assert_alive(mounted)


def test_a_token_response_without_its_ttl_header_works(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    emulator.token_ttl_header = False
    mounted = make_mount(emulator, *FAST)
    for _ in range(3):
        assert (mounted.path / "instance-id").read_bytes() == emulator.get_bytes(
            "meta-data/instance-id"
        )
        time.sleep(0.3)
    assert emulator.counters.count(method="PUT") == 1  # the token asked for is kept, not 0 s
    assert_alive(mounted)


def test_skipped_names_are_logged_with_their_path(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    emulator.set_raw("meta-data/placement/", b"region\n..\nzone\x00x")
    mounted = make_mount(emulator, *FAST)
    assert os.listdir(mounted.path / "placement") == ["region"]
    lines = warnings_about(mounted, "meta-data/placement/")
    assert len(lines) == 2
    assert any(re.search(r"skipping entry '\.\.'", line) for line in lines)


# --- what once ended the mount or misled it ----------------------------------------------------


@pytest.mark.parametrize("granted", ["²", "9" * 5000, "-5", "abc"])
def test_a_malformed_token_ttl_is_a_token_error_held_off_not_a_crash(
    make_mount: MakeMount, emulator: Emulator, granted: str
) -> None:
    emulator.set_raw(
        "api/token", b"A" * 56, headers={"X-Aws-Ec2-Metadata-Token-Ttl-Seconds": granted}
    )
    mounted = make_mount(emulator, *FAST, "--prefetch")
    time.sleep(0.5)  # the prefetch has met the token by now
    assert_alive(mounted)
    for name in ("ami-id", "instance-id", "instance-type"):
        error, seconds = timed_errno(lambda name=name: (mounted.path / name).read_bytes())
        assert error == errno.EIO
        assert seconds < DEADLINE + MARGIN
    # One token request (and its retry) for every read in the hold-off, not one per read.
    assert emulator.counters.count(method="PUT") <= 2
    assert_alive(mounted)
    assert "Traceback" not in mounted.log()


def test_a_tree_too_deep_for_a_url_is_cut_with_one_warning(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    segment = "d" * 250
    emulator.set("meta-data/deep/" + "/".join([segment] * 40), "bottom")
    mounted = make_mount(emulator, *FAST, "--prefetch")
    time.sleep(1.0)
    assert_alive(mounted)
    fd, depth = os.open(mounted.path / "deep", os.O_RDONLY | os.O_DIRECTORY), 0
    try:  # level by level (openat): the whole path is longer than a system call takes
        while (entries := os.listdir(fd)) and depth < 50:
            inner = os.open(entries[0], os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, depth = inner, depth + 1
    finally:
        os.close(fd)
    assert 20 < depth < 40  # every level up to the bound on path length, none past it
    cut = [line for line in mounted.log().splitlines() if "path longer than" in line]
    assert len(cut) == 1, mounted.log()


def test_a_listing_of_100000_names_is_bounded_in_time_and_memory(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    emulator.set_raw(TAGS, b"\n".join(f"key-{i}".encode() for i in range(100_000)))
    mounted = make_mount(emulator, *FAST)
    before = _rss_mib(mounted.process.pid)
    error, seconds = timed_errno(lambda: os.listdir(mounted.path / "tags" / "instance"))
    assert error is None
    assert seconds < DEADLINE + MARGIN
    for n in range(50):  # each a dictionary lookup, not a walk over the listing
        error, _ = timed_errno(lambda n=n: os.stat(mounted.path / "tags/instance" / f"no-{n}"))
        assert error == errno.ENOENT
    assert _rss_mib(mounted.process.pid) - before < 60, "the 20 000-path bound bounds memory"
    errors = [line for line in mounted.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1, mounted.log()
    assert "more than 20000 paths" in errors[0]
    assert_alive(mounted)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_public_key_index_too_long_for_a_name_is_skipped(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    keys = "meta-data/public-keys/"
    listing = emulator.get_bytes(keys) + b"\n" + b"9" * 300 + b"=evil-key"
    emulator.set_raw(keys, listing)
    mounted = make_mount(emulator, *FAST)
    names = os.listdir(mounted.path / "public-keys")
    assert all(len(name.encode()) <= 255 for name in names)
    assert "evil-key" not in names
    assert "9" * 300 not in names
    assert "0" in names
    assert_alive(mounted)


def test_a_token_over_1_mib_is_a_token_error_not_efbig(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    emulator.set_raw("api/token", b"t" * (2 * MiB))
    mounted = make_mount(emulator, *FAST)
    for name in ("instance-id", "ami-id"):
        error, seconds = timed_errno(lambda name=name: (mounted.path / name).read_bytes())
        assert error == errno.EIO  # no token: IMDS is unavailable, not this file too big
        assert seconds < DEADLINE + MARGIN
    assert any("token" in line for line in mounted.log().splitlines() if "WARNING" in line)
    assert_alive(mounted)


def test_an_xhtml_page_with_200_is_never_served_as_a_value(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    page = b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml">login</html>'
    emulator.set_raw("meta-data/ami-id", page, content_type="application/xhtml+xml")
    mounted = make_mount(emulator, *FAST)
    error, _ = timed_errno(lambda: (mounted.path / "ami-id").read_bytes())
    assert error == errno.EIO
    assert "HTML" in warnings_about(mounted, "meta-data/ami-id")[0]
    assert_alive(mounted)


def test_a_credential_served_as_a_directory_is_secret_and_never_logged(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    roles = "meta-data/iam/security-credentials/"
    role = emulator.get_bytes(roles).decode().split("\n")[0]
    credentials = emulator.get_bytes(roles + role)
    emulator.set_raw(roles, role.encode() + b"/")  # the role listed as a directory ...
    emulator.set_raw(f"{roles}{role}/", credentials)  # ... whose "listing" is the document
    mounted = make_mount(emulator, *FAST, "--debug")
    directory = mounted.path / "iam/security-credentials" / role
    assert directory.is_dir()
    for entry in directory.iterdir():
        with contextlib.suppress(OSError):
            assert entry.stat().st_mode & 0o777 in (0o400, 0o555)
    document = json.loads(credentials)
    secrets = [document[key] for key in ("AccessKeyId", "SecretAccessKey", "Token")]
    log = mounted.log()
    for secret in secrets:
        assert str(secret) not in log
    assert_alive(mounted)


def test_an_outage_is_logged_per_path_a_reader_asked_for_and_summarised_for_the_rest(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    mounted = make_mount(emulator, *FAST)
    os.listdir(mounted.path)  # the read-ahead warms every directory one level down
    time.sleep(0.5)
    emulator.faults.error_rate = 1.0  # the outage
    mounted.process.send_signal(signal.SIGHUP)  # a reload drops every value
    time.sleep(0.3)
    for name in ("instance-id", "ami-id"):
        (mounted.path / name).read_bytes()  # the last good values, served stale
    os.listdir(mounted.path / "placement")
    time.sleep(1.0)
    warnings = [line for line in mounted.log().splitlines() if " WARNING " in line]
    asked = [line for line in warnings if "reading ahead" not in line]
    assert len(asked) <= 4, "\n".join(warnings)  # instance-id, ami-id, placement/ (and /)
    assert len([line for line in warnings if "reading ahead" in line]) <= 1
    assert_alive(mounted)
