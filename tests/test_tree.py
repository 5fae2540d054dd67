"""MetadataTree's listing rules: what is a directory, a file, a symlink, and what is refused."""

from __future__ import annotations

import logging

import pytest

from imdsfs._tree import ListingEntry, NodeKind, mount_path, parse_listing


def names(entries: list[ListingEntry]) -> list[tuple[str, NodeKind, str]]:
    return [(e.name, e.kind, e.imds_path) for e in entries]


def test_trailing_slash_makes_a_directory_and_its_absence_a_file() -> None:
    entries = parse_listing(b"ami-id\nplacement/\nsecurity-groups", "meta-data/")
    assert names(entries) == [
        ("ami-id", NodeKind.FILE, "meta-data/ami-id"),
        ("placement", NodeKind.DIRECTORY, "meta-data/placement/"),
        ("security-groups", NodeKind.FILE, "meta-data/security-groups"),
    ]


def test_public_keys_index_is_the_directory_and_the_key_name_a_symlink_to_it() -> None:
    entries = parse_listing(b"0=deploy-key\n1=backup", "meta-data/public-keys/")
    assert names(entries) == [
        ("0", NodeKind.DIRECTORY, "meta-data/public-keys/0/"),
        ("deploy-key", NodeKind.SYMLINK, "meta-data/public-keys/deploy-key"),
        ("1", NodeKind.DIRECTORY, "meta-data/public-keys/1/"),
        ("backup", NodeKind.SYMLINK, "meta-data/public-keys/backup"),
    ]
    assert entries[1].target == "0"


def test_n_equals_name_elsewhere_is_an_ordinary_name() -> None:
    entries = parse_listing(b"0=x", "meta-data/tags/instance/")
    assert names(entries) == [("0=x", NodeKind.FILE, "meta-data/tags/instance/0=x")]


def test_no_trailing_newline_and_a_trailing_newline_give_the_same_entries() -> None:
    assert parse_listing(b"a\nb/", "dynamic/") == parse_listing(b"a\nb/\n", "dynamic/")


@pytest.mark.parametrize(
    "hostile",
    [
        b".",
        b"..",
        b"./",
        b"../",
        b"",
        b"a/b",
        b"a/b/",
        b"nul\0name",
        b"x" * 256,
        "é".encode() * 128,
    ],
)
def test_names_that_cannot_be_filenames_are_skipped(hostile: bytes) -> None:
    entries = parse_listing(b"good\n" + hostile + b"\nalso-good", "meta-data/")
    assert [e.name for e in entries] == ["good", "also-good"]


def test_a_255_byte_name_is_kept() -> None:
    assert [e.name for e in parse_listing(b"x" * 255, "meta-data/")] == ["x" * 255]


def test_non_utf8_names_are_skipped_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        assert [e.name for e in parse_listing(b"ok\n\xff\xfe", "meta-data/odd/")] == ["ok"]
    assert len([r for r in caplog.records if "not UTF-8" in r.getMessage()]) == 1


def test_first_of_duplicate_names_wins_even_across_file_and_directory() -> None:
    entries = parse_listing(b"dup\ndup/\ndup", "meta-data/")
    assert names(entries) == [("dup", NodeKind.FILE, "meta-data/dup")]


def test_mount_paths_drop_the_meta_data_prefix_only() -> None:
    assert mount_path("meta-data/placement/region") == "placement/region"
    assert mount_path("meta-data/") == ""
    assert mount_path("dynamic/instance-identity/document") == "dynamic/instance-identity/document"
    assert mount_path("user-data") == "user-data"
