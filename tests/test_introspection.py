"""Extended attributes on every node (``user.imds.*``) and ``imdsfs stats``."""

from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyfuse3
import pytest

from imdsfs import MetadataCache, TtlPolicy
from imdsfs._fs import ImdsOperations
from imdsfs._introspect import format_stats
from imdsfs._tree import MetadataTree
from imdsfs.emulator import Emulator

from .conftest import MakeClient, Mounted

NODE_ATTRIBUTES = ["user.imds.url", "user.imds.fetched_at", "user.imds.ttl", "user.imds.source"]


def xattr(path: Path, name: str) -> str:
    return os.getxattr(path, name).decode()


def stats(mounted: Mounted, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imdsfs", "stats", str(mounted.path), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def counters(mounted: Mounted) -> dict[str, object]:
    result = stats(mounted, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


# --- xattrs -----------------------------------------------------------------------------------


def test_a_file_describes_its_value(mounted: Mounted, emulator: Emulator) -> None:
    path = mounted.path / "instance-id"
    path.read_bytes()
    assert os.listxattr(path) == NODE_ATTRIBUTES
    assert xattr(path, "user.imds.url") == f"{emulator.url}/latest/meta-data/instance-id"
    fetched = datetime.datetime.strptime(xattr(path, "user.imds.fetched_at"), "%Y-%m-%dT%H:%M:%SZ")
    age = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - fetched
    assert datetime.timedelta(seconds=-1) <= age < datetime.timedelta(seconds=30)
    assert 21500 < int(xattr(path, "user.imds.ttl")) <= 21600  # instance-id: 6 h
    assert xattr(path, "user.imds.source") == "cache"  # read above, still fresh


def test_a_value_fetched_to_answer_says_live(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--ttl", "instance-type=0")
    fd = os.open(mounted.path / "instance-type", os.O_RDONLY)
    try:  # by descriptor: no path lookup fetches it first; with TTL 0 getxattr must fetch
        assert os.getxattr(fd, "user.imds.source") == b"live"
        assert os.getxattr(fd, "user.imds.ttl") == b"0"
    finally:
        os.close(fd)


def test_a_value_served_during_an_outage_says_stale(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--ttl", "instance-type=0", "--deadline", "2")
    path = mounted.path / "instance-type"
    assert path.read_bytes() == b"m5.large"
    emulator.faults.error_rate = 1.0  # every GET: 500
    assert xattr(path, "user.imds.source") == "stale"
    assert xattr(path, "user.imds.ttl") == "0"
    seen = counters(mounted)
    assert seen["stale_serves"] >= 1  # type: ignore[operator]
    assert seen["errors.unavailable"] >= 1  # type: ignore[operator]


def test_a_directory_is_described_once_its_listing_is_cached(mounted: Mounted) -> None:
    placement = mounted.path / "placement"
    assert xattr(placement, "user.imds.url").endswith("/latest/meta-data/placement/")
    with pytest.raises(OSError) as caught:
        os.getxattr(placement, "user.imds.fetched_at")  # listing not fetched: nothing to say
    assert caught.value.errno == errno.ENODATA
    os.listdir(placement)
    assert xattr(placement, "user.imds.source") == "cache"


async def test_other_names_are_refused_without_asking_imds(
    emulator: Emulator, make_client: MakeClient
) -> None:
    # In process: through a mount, the kernel's own permission check would fetch (TTL 0).
    client = make_client(emulator)
    cache = MetadataCache(client, TtlPolicy.from_rules(["**=0"]))
    operations = ImdsOperations(MetadataTree(cache))
    ctx: Any = types.SimpleNamespace(pid=1, uid=0, gid=0, umask=0)  # a duck-typed context
    inode = (await operations.lookup(pyfuse3.ROOT_INODE, b"instance-id", ctx)).st_ino
    calls = cache.statistics()["calls"]
    for name in (b"security.selinux", b"system.posix_acl_access", b"user.imds.stats"):
        with pytest.raises(pyfuse3.FUSEError) as caught:
            await operations.getxattr(inode, name, ctx)  # user.imds.stats: the root's only
        assert caught.value.errno == errno.ENODATA, name
    assert await operations.listxattr(inode, ctx) == [n.encode() for n in NODE_ATTRIBUTES]
    assert cache.statistics()["calls"] == calls  # nothing was fetched
    assert await operations.getxattr(inode, b"user.imds.source", ctx) == b"live"  # TTL 0
    assert cache.statistics()["calls"] == calls + 1


def test_symlinks_have_no_attributes(mounted: Mounted) -> None:
    link = mounted.path / "public-keys" / "ops-team"
    assert os.listxattr(link, follow_symlinks=False) == []
    assert "user.imds.url" in os.listxattr(link)  # followed: the key's directory


def test_the_root_carries_the_stats(mounted: Mounted) -> None:
    assert os.listxattr(mounted.path) == [*NODE_ATTRIBUTES, "user.imds.stats"]
    assert json.loads(os.getxattr(mounted.path, "user.imds.stats"))["token_puts"] == 0
    (mounted.path / "instance-id").read_bytes()  # live counters: no remount needed
    assert json.loads(os.getxattr(mounted.path, "user.imds.stats"))["token_puts"] == 1


@pytest.mark.skipif(shutil.which("getfattr") is None, reason="getfattr missing (apt install attr)")
def test_getfattr_dumps_them(mounted: Mounted, emulator: Emulator) -> None:
    (mounted.path / "placement" / "region").read_bytes()
    result = subprocess.run(
        ["getfattr", "-d", "-m", "^user\\.imds\\.", "--absolute-names", "placement/region"],
        cwd=mounted.path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "# file: placement/region"
    assert f'user.imds.url="{emulator.url}/latest/meta-data/placement/region"' in lines
    assert 'user.imds.source="cache"' in lines


# --- imdsfs stats -----------------------------------------------------------------------------


def test_stats_prints_the_counters_of_a_running_mount(mounted: Mounted, emulator: Emulator) -> None:
    (mounted.path / "instance-id").read_bytes()
    (mounted.path / "instance-id").read_bytes()  # served by the kernel's page cache
    os.listdir(mounted.path)  # the listing's sizes: instance-id is a cache hit
    result = stats(mounted)
    assert result.returncode == 0, result.stderr
    table = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert table["endpoint"] == emulator.url
    assert table["token_puts"] == "1"
    assert int(table["hits"]) >= 1
    assert int(table["misses"]) >= 1
    assert table["errors.not_found"] == "0"
    assert emulator.counters.tokens_issued == 1


def test_stats_counts_what_happens_between_two_calls(mounted: Mounted) -> None:
    (mounted.path / "instance-id").read_bytes()
    first = counters(mounted)
    (mounted.path / "ami-id").read_bytes()  # not cached yet
    second = counters(mounted)
    assert second["misses"] > first["misses"]  # type: ignore[operator]
    assert second["fetches"] > first["fetches"]  # type: ignore[operator]
    assert second["token_puts"] == first["token_puts"] == 1


def test_stats_on_a_directory_that_is_not_imdsfs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imdsfs", "stats", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == f"imdsfs: {tmp_path} is not an imdsfs mount\n"


def test_format_stats_aligns_values() -> None:
    assert format_stats({"hits": 3, "token_puts": 1}) == "hits        3\ntoken_puts  1"


def test_the_ttl_of_a_value_dropped_by_sighup_while_the_service_fails_is_0(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--deadline", "1")
    region = mounted.path / "placement/region"
    region.read_bytes()
    emulator.faults.error_rate = 1.0
    mounted.process.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    assert os.getxattr(region, "user.imds.ttl") == b"0"
    assert "Traceback" not in mounted.log()
