"""Secrets: who may read credentials and user-data, what never reaches a log, and where the
daemon's requests may go.

Readers other than root run through ``setpriv`` as nobody (65534), or as nobody in group
root for the group-readable mode.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from imdsfs.emulator import Emulator

from .conftest import Mounted

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
NOBODY_IN_GROUP_ROOT = ["setpriv", "--reuid=65534", "--regid=0", "--clear-groups"]

MakeMount = Callable[..., Mounted]


def secret_paths(emulator: Emulator) -> list[str]:
    role = emulator.get_bytes("meta-data/iam/security-credentials/").decode().split("\n")[0]
    return [
        f"iam/security-credentials/{role}",
        "identity-credentials/ec2/security-credentials/ec2-instance",
        "user-data",
        # The signed identity documents prove the instance's identity (Vault's EC2 auth).
        "dynamic/instance-identity/pkcs7",
        "dynamic/instance-identity/signature",
        "dynamic/instance-identity/rsa2048",
    ]


def imds_path(mount_path: str) -> str:
    if mount_path == "user-data" or mount_path.startswith("dynamic/"):
        return mount_path
    return f"meta-data/{mount_path}"


def test_the_identity_document_itself_stays_readable(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--allow-other")
    document = mounted.path / "dynamic/instance-identity/document"
    assert stat.S_IMODE(document.stat().st_mode) == 0o444
    assert cat_as(NOBODY, document).stdout == emulator.get_bytes(
        "dynamic/instance-identity/document"
    )


def cat_as(user: list[str], path: os.PathLike[str] | str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*user, "cat", str(path)], capture_output=True, timeout=30, check=False)


# --- modes ------------------------------------------------------------------------------------


def test_secrets_are_0400_root_and_eacces_for_others_even_with_allow_other(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--allow-other", "--uid", "65534", "--gid", "65534")
    for path in secret_paths(emulator):
        st = (mounted.path / path).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o400, 0, 0), path
        for user in (NOBODY, NOBODY_IN_GROUP_ROOT):
            denied = cat_as(user, mounted.path / path)
            assert denied.returncode == 1, path
            assert denied.stdout == b"", path
            assert b"Permission denied" in denied.stderr, path  # EACCES
        assert (mounted.path / path).read_bytes() == emulator.get_bytes(imds_path(path))
    # --uid/--gid give away the ordinary files, never the secrets.
    assert (mounted.path / "instance-id").stat().st_uid == 65534
    allowed = cat_as(NOBODY, mounted.path / "instance-id")
    assert allowed.stdout == emulator.get_bytes("meta-data/instance-id")


@pytest.mark.parametrize(
    ("mode", "nobody_reads", "group_root_reads"),
    [("0440", False, True), ("0444", True, True)],
)
def test_secret_mode_widens_access_only_as_asked(
    make_mount: MakeMount,
    emulator: Emulator,
    mode: str,
    nobody_reads: bool,
    group_root_reads: bool,
) -> None:
    mounted = make_mount(emulator, "--allow-other", "--secret-mode", mode)
    for path in secret_paths(emulator):
        st = (mounted.path / path).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (int(mode, 8), 0, 0), path
        expected = emulator.get_bytes(imds_path(path))
        for user, may_read in ((NOBODY, nobody_reads), (NOBODY_IN_GROUP_ROOT, group_root_reads)):
            result = cat_as(user, mounted.path / path)
            assert (result.stdout == expected) is may_read, (path, user)
            assert (result.returncode == 0) is may_read, (path, user)


@pytest.mark.parametrize("mode", ["0600", "0644", "0500", "0040", "0", "abc", "0o444x"])
def test_a_secret_mode_with_more_than_read_bits_is_refused(mode: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imdsfs", "mount", "--secret-mode", mode, "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "--secret-mode" in result.stderr


# --- logs -------------------------------------------------------------------------------------


def credential_values(emulator: Emulator) -> set[str]:
    """Every secret string the emulator serves now: keys, tokens, and the user-data text."""
    values: set[str] = set()
    for path in secret_paths(emulator)[:2]:
        document = json.loads(emulator.get_bytes(imds_path(path)))
        values |= {document["AccessKeyId"], document["SecretAccessKey"], document["Token"]}
    return values


def test_no_token_or_credential_ever_reaches_the_debug_log(
    make_mount: MakeMount, emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--debug", "--allow-other", "--ttl", "**=0.2")
    secrets = credential_values(emulator)
    paths = secret_paths(emulator)

    def read_everything() -> None:
        for path in paths:
            (mounted.path / path).read_bytes()
        cat_as(NOBODY, mounted.path / paths[0])  # a refused read, logged at debug

    read_everything()
    # Every path that logs: a revoked token (401, then a new one), retries after 500s,
    # stale values served during an outage, a value that changes.
    emulator.revoke_tokens()
    emulator.rotate_credentials()
    secrets |= credential_values(emulator)
    time.sleep(0.3)
    read_everything()
    emulator.faults.fail_next(2, status=500)
    time.sleep(0.3)
    read_everything()
    emulator.faults.error_rate = 1.0
    time.sleep(0.3)
    read_everything()
    emulator.faults.error_rate = 0.0

    log = mounted.log()
    assert " DEBUG " in log  # the run did log at debug level
    assert "token" in log.lower()
    assert "serving the value fetched" in log  # the outage path logged too
    tokens = emulator.issued_tokens()
    assert len(tokens) >= 2
    for secret in [*tokens, *secrets]:
        assert secret not in log, "a secret reached the log"


# --- where requests go ------------------------------------------------------------------------


@pytest.mark.parametrize("redirected", ["meta-data/instance-id", "api/token"])
def test_the_daemon_talks_only_to_its_endpoint_and_follows_no_redirect(
    make_mount: MakeMount,
    emulator: Emulator,
    make_emulator: Callable[..., Emulator],
    monkeypatch: pytest.MonkeyPatch,
    redirected: str,
) -> None:
    elsewhere = make_emulator()
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, elsewhere.url)  # the daemon inherits the environment
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", elsewhere.url)  # --endpoint wins
    emulator.set_raw(redirected, status=302, headers={"Location": f"{elsewhere.url}/latest/x"})
    mounted = make_mount(emulator, "--deadline", "2")
    with pytest.raises(OSError) as raised:
        (mounted.path / "instance-id").read_bytes()
    assert raised.value.strerror == "Input/output error"
    assert emulator.counters.total > 0
    assert elsewhere.counters.total == 0
    assert "302" in mounted.log()
