"""The EC2 provider: its listing rules, its URL layout, its secrets and its endpoint."""

from __future__ import annotations

import pytest

from imdsfs import ClientConfig, Ec2Provider
from imdsfs._provider import ListingEntry, NodeKind

EC2 = Ec2Provider(ClientConfig(endpoint="http://imds.test"), environ={})


def parse(body: bytes, directory: str = "") -> list[ListingEntry]:
    return EC2.parse_listing(body, directory, limit=20_000).entries


def names(entries: list[ListingEntry]) -> list[tuple[str, NodeKind, str]]:
    return [(e.name, e.kind, e.path) for e in entries]


def test_trailing_slash_makes_a_directory_and_its_absence_a_file() -> None:
    assert names(parse(b"ami-id\nplacement/\nsecurity-groups")) == [
        ("ami-id", NodeKind.FILE, "ami-id"),
        ("placement", NodeKind.DIRECTORY, "placement/"),
        ("security-groups", NodeKind.FILE, "security-groups"),
    ]


def test_public_keys_index_is_the_directory_and_the_key_name_a_symlink_to_it() -> None:
    entries = parse(b"0=deploy-key\n1=backup", "public-keys/")
    assert names(entries) == [
        ("0", NodeKind.DIRECTORY, "public-keys/0/"),
        ("deploy-key", NodeKind.SYMLINK, "public-keys/deploy-key"),
        ("1", NodeKind.DIRECTORY, "public-keys/1/"),
        ("backup", NodeKind.SYMLINK, "public-keys/backup"),
    ]
    assert entries[1].target == "0"
    assert entries[0].listed == "0=deploy-key"


def test_a_public_key_index_too_long_for_a_name_is_skipped_with_its_symlink() -> None:
    listing = EC2.parse_listing(b"0=a\n" + b"9" * 300 + b"=b", "public-keys/", limit=100)
    assert [e.name for e in listing.entries] == ["0", "a"]
    assert [reason for _, reason in listing.skipped] == ["name longer than 255 bytes"]


def test_n_equals_name_elsewhere_is_an_ordinary_name() -> None:
    assert names(parse(b"0=x", "tags/instance/")) == [("0=x", NodeKind.FILE, "tags/instance/0=x")]


def test_no_trailing_newline_and_a_trailing_newline_give_the_same_entries() -> None:
    assert parse(b"a\nb/", "dynamic/") == parse(b"a\nb/\n", "dynamic/")


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
    listing = EC2.parse_listing(b"good\n" + hostile + b"\nalso-good", "", limit=100)
    assert [e.name for e in listing.entries] == ["good", "also-good"]
    assert len(listing.skipped) == 1


def test_a_255_byte_name_is_kept() -> None:
    assert [e.name for e in parse(b"x" * 255)] == ["x" * 255]


def test_a_path_past_8_kib_is_skipped() -> None:
    deep = "d/" * 4095
    listing = EC2.parse_listing(b"ok\n" + b"y" * 200, deep, limit=100)
    assert listing.entries == []
    assert [reason for _, reason in listing.skipped] == ["path longer than 8192 bytes"] * 2


def test_first_of_duplicate_names_wins_even_across_file_and_directory() -> None:
    assert names(parse(b"dup\ndup/\ndup")) == [("dup", NodeKind.FILE, "dup")]


def test_at_most_limit_entries_are_kept() -> None:
    body = b"\n".join(b"k%d" % i for i in range(1000))
    assert len(EC2.parse_listing(body, "tags/instance/", limit=40).entries) == 40


def test_the_mount_root_is_meta_data_and_dynamic_and_user_data_live_beside_it() -> None:
    assert EC2.url("") == "http://imds.test/latest/meta-data/"
    assert EC2.url("placement/region") == "http://imds.test/latest/meta-data/placement/region"
    assert EC2.url("dynamic/instance-identity/document") == (
        "http://imds.test/latest/dynamic/instance-identity/document"
    )
    assert EC2.url("user-data") == "http://imds.test/latest/user-data"


@pytest.mark.parametrize(
    "path",
    [
        "iam/security-credentials/my-role",
        "iam/security-credentials/my-role/AccessKeyId",  # a credential served as a directory
        "identity-credentials/ec2/security-credentials/ec2-instance",
        "user-data",
        "dynamic/instance-identity/pkcs7",
        "dynamic/instance-identity/signature",
        "dynamic/instance-identity/rsa2048",
    ],
)
def test_credentials_user_data_and_identity_proofs_are_secret(path: str) -> None:
    assert EC2.secrets.is_secret(path)


@pytest.mark.parametrize(
    "path", ["iam/info", "instance-id", "dynamic/instance-identity/document", "user-data-x"]
)
def test_other_paths_are_not(path: str) -> None:
    assert not EC2.secrets.is_secret(path)


def test_names_below_a_credential_directory_never_reach_a_log_line() -> None:
    assert EC2.secrets.loggable("iam/security-credentials/role/ASIA") == (
        "iam/security-credentials/…"
    )
    assert EC2.where("iam/security-credentials/role") == (
        "/latest/meta-data/iam/security-credentials/…"
    )
    assert EC2.where("placement/region") == "/latest/meta-data/placement/region"


@pytest.mark.parametrize(
    ("hostile", "kept", "skipped"),
    [
        (b"ok\nq?x\n#frag\n%2e%2e\nback\\slash\nbell\x07", ["ok"], 5),
        (b"ok\n\nalso-ok", ["ok", "also-ok"], 1),
        (b"ok\nok/\nok", ["ok"], 1),  # one name (the tree warns once however often it repeats)
    ],
    ids=["unfetchable", "empty-line", "duplicates"],
)
def test_the_parser_skips_unfetchable_empty_and_repeated_names(
    hostile: bytes, kept: list[str], skipped: int
) -> None:
    listing = EC2.parse_listing(hostile, "hostile/", limit=100)
    assert [e.name for e in listing.entries] == kept
    assert len({name for name, _ in listing.skipped}) == skipped


def test_a_trailing_newline_is_not_an_empty_entry() -> None:
    listing = EC2.parse_listing(b"a\nb/\n", "trailing/", limit=100)
    assert [e.name for e in listing.entries] == ["a", "b"]
    assert listing.skipped == []
    assert EC2.parse_listing(b"", "trailing/", limit=100).entries == []
