"""MetadataTree: the listing rules (what is a directory, a file, a symlink, and what is
refused), and, against the emulator, listings and the read-ahead."""

from __future__ import annotations

import logging

import pytest
import trio

from imdsfs import (
    Ec2Provider,
    MetadataCache,
    MetadataTree,
    NotFound,
    TtlPolicy,
    _tree,
)
from imdsfs._tree import MAX_WARNED, Node
from imdsfs.emulator import Emulator

from .conftest import MakeClient

# --- MetadataTree against the emulator ----------------------------------------------------

MACS = "network/interfaces/macs/"  # a mount path
IMDS_MACS = f"meta-data/{MACS}"  # where the emulator keeps it


@pytest.fixture
def cache(emulator: Emulator, make_client: MakeClient) -> MetadataCache:
    client = make_client(emulator, backoff_base=0.0)
    return MetadataCache(client, TtlPolicy(builtin=client.provider.ttl_rules), holdoff=0.0)


@pytest.fixture
def tree(cache: MetadataCache) -> MetadataTree:
    return MetadataTree(cache)


async def directory(tree: MetadataTree, path: str) -> Node:
    """The directory node at mount path *path* (``placement/``)."""
    node = tree.root
    for name in path.strip("/").split("/"):
        node = await tree.child(node, name)
    return node


def requested(emulator: Emulator, prefix: str = "") -> list[str]:
    """Paths GET so far under ``/latest/<prefix>``, in arrival order."""
    return [path for path in emulator.counters.paths() if path.startswith(f"/latest/{prefix}")]


async def test_the_root_lists_the_same_entries_every_time(tree: MetadataTree) -> None:
    first = [node.name for node in await tree.children(tree.root)]
    again = [node.name for node in await tree.children(tree.root)]
    assert again == first
    assert first.count("dynamic") == 1
    assert first.count("user-data") == 1


async def test_listing_a_directory_reads_its_subdirectories_ahead(
    tree: MetadataTree, emulator: Emulator
) -> None:
    macs = await directory(tree, MACS)
    async with trio.open_nursery() as nursery:
        tree.read_ahead_in(nursery)
        await tree.stat_children(macs)
    # both MACs' listings and every file in them, but not one level further down
    mac_paths = [f"/latest/{IMDS_MACS}{m}" for m in emulator.get_bytes(IMDS_MACS).decode().split()]
    assert all(path in requested(emulator) for path in mac_paths)
    assert len(requested(emulator, IMDS_MACS)) == 1 + 2 + 2 * 20
    assert not [path for path in requested(emulator) if "ipv4-associations/" in path]

    tree.read_ahead_in(None)
    emulator.counters.reset()
    first_mac = await tree.child(macs, mac_paths[0].rsplit("/", 2)[-2])
    stats = await tree.stat_children(first_mac)
    assert len(stats) == 21
    assert requested(emulator) == []  # the reader found everything ready


async def test_a_directory_is_read_ahead_once_however_often_its_parent_is_listed(
    tree: MetadataTree, emulator: Emulator
) -> None:
    macs = await directory(tree, MACS)
    await tree.children(macs)
    emulator.faults.latency = 0.2  # every read-ahead is still in flight while we list again
    async with trio.open_nursery() as nursery:
        tree.read_ahead_in(nursery)
        for _ in range(20):
            nursery.start_soon(tree.stat_children, macs)
        await trio.sleep(0.1)
        assert len(nursery.child_tasks) == 2  # one read-ahead per MAC, not one per listing
    assert len(requested(emulator, IMDS_MACS)) == 1 + 2 + 2 * 20  # each listing and file once


async def test_a_directory_read_lately_is_not_read_ahead_again(tree: MetadataTree) -> None:
    macs = await directory(tree, MACS)
    async with trio.open_nursery() as nursery:
        tree.read_ahead_in(nursery)
        await tree.stat_children(macs)
    async with trio.open_nursery() as nursery:  # both MAC listings are fresh in the cache now
        tree.read_ahead_in(nursery)
        await tree.stat_children(macs)
        assert len(nursery.child_tasks) == 0  # no task per file just to hit the cache
    tree.read_ahead_in(None)


async def test_read_ahead_failures_are_left_for_the_reader(
    tree: MetadataTree, emulator: Emulator
) -> None:
    macs = await directory(tree, MACS)
    await tree.children(macs)
    emulator.faults.error_rate = 1.0  # every read-ahead request fails, retries and all
    async with trio.open_nursery() as nursery:
        tree.read_ahead_in(nursery)
        await tree.stat_children(macs)
    tree.read_ahead_in(None)
    emulator.faults.error_rate = 0.0
    mac = (await tree.children(macs))[0]
    assert len(await tree.stat_children(mac)) == 21


async def test_an_imds_inventing_names_cannot_grow_the_tree_past_its_bound(
    cache: MetadataCache, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    tree = MetadataTree(cache, max_nodes=40)
    tags = await directory(tree, "tags/instance/")
    known = [node.name for node in await tree.children(tags)]
    room = 40 - len(list(tree.nodes()))
    for round_ in range(3):  # new names on every listing
        for i in range(20):
            emulator.set(f"meta-data/tags/instance/invented-{round_}-{i}", "x")
        cache.invalidate()
        names = [node.name for node in await tree.children(tags)]
        assert names[: len(known)] == known  # what was there stays
    assert len(list(tree.nodes())) == 40
    assert len(names) == len(known) + room
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "more than 40 paths" in errors[0].getMessage()
    assert (await tree.stat(await tree.child(tags, known[0]))).value is not None


async def test_looking_up_a_name_parses_and_registers_nothing_once_the_listing_is_known(
    cache: MetadataCache, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.set_raw(
        "meta-data/tags/instance/", b"\n".join(f"key-{i}".encode() for i in range(5000))
    )
    tree = MetadataTree(cache)
    tags = await directory(tree, "tags/instance/")
    assert len(await tree.children(tags)) == 5000
    nodes = len(list(tree.nodes()))
    parses: list[str] = []
    original = Ec2Provider.parse_listing
    monkeypatch.setattr(
        Ec2Provider,
        "parse_listing",
        lambda self, *a, **k: parses.append(a[1]) or original(self, *a, **k),
    )
    for n in range(200):  # misses and hits alike: one dictionary lookup each
        with pytest.raises(NotFound):
            await tree.child(tags, f"missing-{n}")
        assert (await tree.child(tags, f"key-{n}")).name == f"key-{n}"
    assert parses == []
    assert len(list(tree.nodes())) == nodes


async def test_a_file_keeps_its_inode_while_its_bytes_stay_and_gets_a_new_one_when_they_change(
    cache: MetadataCache, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tree, "RECENT_VERSIONS", 0)  # no grace for replies being built
    tree = MetadataTree(cache)
    placement = await directory(tree, "placement/")
    region = await tree.child(placement, "region")
    first = await tree.stat(region)
    cache.invalidate()
    same = await tree.stat(region)
    assert same.inode == first.inode != region.inode  # a version's inode, not the node's
    emulator.set("meta-data/placement/region", "eu-north-1")
    cache.invalidate()
    changed = await tree.stat(region)
    assert changed.inode not in (first.inode, region.inode)
    assert (await tree.read_version(changed.version)) == (b"eu-north-1", True)  # type: ignore[arg-type]
    # The superseded version: freed at once, since the kernel never held it.
    with pytest.raises(NotFound):
        tree.entry(first.inode)


async def test_a_superseded_version_lives_until_the_kernel_forgets_it(
    cache: MetadataCache, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tree, "RECENT_VERSIONS", 0)
    tree = MetadataTree(cache)
    region = await tree.child(await directory(tree, "placement/"), "region")
    old = await tree.stat(region)
    tree.looked_up(old.inode)  # the kernel holds it (a dentry, an open file)
    tree.looked_up(old.inode)
    emulator.set("meta-data/placement/region", "eu-north-1")
    cache.invalidate()
    new = await tree.stat(region)
    assert old.version is not None
    assert new.version is not None
    assert tree.entry(old.inode) == old.version  # still there for the kernel
    assert (await tree.read_version(old.version))[1]  # with its own bytes
    assert (await tree.read_version(new.version)) == (b"eu-north-1", True)
    tree.forget(old.inode, 1)
    assert tree.entry(old.inode)  # still held once
    tree.forget(old.inode, 1)
    with pytest.raises(NotFound):
        tree.entry(old.inode)
    tree.forget(new.inode, 5)  # the current version stays whatever the kernel says
    assert tree.entry(new.inode)


async def test_an_unusable_name_is_warned_about_once_however_often_it_is_listed(
    cache: MetadataCache, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    emulator.set_raw("meta-data/tags/instance/", b"ok\n\xff\xfe")
    tree = MetadataTree(cache)
    tags = await directory(tree, "tags/instance/")
    for _ in range(3):
        cache.invalidate()
        assert [node.name for node in await tree.children(tags)] == ["ok"]
    assert len([r for r in caplog.records if "not UTF-8" in r.getMessage()]) == 1


async def test_warnings_for_unusable_names_stop_after_a_thousand(
    cache: MetadataCache, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    emulator.set_raw("meta-data/tags/instance/", b"".join(b"bad%d\x01\n" % i for i in range(3000)))
    tree = MetadataTree(cache)
    assert await tree.children(await directory(tree, "tags/instance/")) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == MAX_WARNED + 1
    assert "no longer logging each" in warnings[-1]


async def test_a_superseded_version_is_kept_a_while_for_replies_being_built(
    cache: MetadataCache, emulator: Emulator
) -> None:
    tree = MetadataTree(cache)
    region = await tree.child(await directory(tree, "placement/"), "region")
    old = await tree.stat(region)
    emulator.set("meta-data/placement/region", "eu-north-1")
    cache.invalidate()
    await tree.stat(region)
    assert tree.entry(old.inode) == old.version  # a readdir may be about to send it


async def test_a_version_whose_bytes_were_let_go_is_read_from_the_cache_if_unchanged(
    cache: MetadataCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tree, "VERSION_BYTES", 1)  # keep (almost) no bytes
    tree = MetadataTree(cache)
    placement = await directory(tree, "placement/")
    region = (await tree.stat(await tree.child(placement, "region"))).version
    zone = (await tree.stat(await tree.child(placement, "availability-zone"))).version
    assert region is not None
    assert zone is not None
    body, exact = await tree.read_version(region)  # let go for the zone's, then got again
    assert exact
    assert len(body) == region.size
