"""Sharing the host's mount with containers: ``-v /run/imds:/run/imds:ro``.

A container is, for this purpose, another mount namespace holding a read-only bind mount of
the host's mount, read by users who are not root there. Non-secret values are readable
(``--allow-other``), credentials are refused, and nothing can be written.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from imdsfs.emulator import Emulator

from .conftest import Mounted

NOBODY = "setpriv --reuid=65534 --regid=65534 --clear-groups"


def in_a_container(mounted: Mounted, script: str) -> subprocess.CompletedProcess[str]:
    """Run *script* (sh) in a new mount namespace where the host's mount is bind-mounted,
    read-only, at ``$IMDS``: what ``docker run -v HOST:/run/imds:ro`` does."""
    target = mounted.path.parent / f"{mounted.path.name}-in-container"
    setup = (
        f"mkdir -p {target} && mount --bind -o ro {mounted.path} {target} && "
        f'IMDS={target} sh -c "$0"'
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", setup, script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_container_user_reads_values_but_never_credentials(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    role = emulator.get_bytes("meta-data/iam/security-credentials/").decode().split("\n")[0]
    mounted = make_mount(emulator, "--allow-other")
    result = in_a_container(
        mounted,
        f"""
        {NOBODY} cat "$IMDS/instance-id"; echo " instance-id:$?"
        {NOBODY} cat "$IMDS/iam/security-credentials/{role}" 2>/dev/null; echo "credentials:$?"
        {NOBODY} cat "$IMDS/user-data" 2>/dev/null; echo "user-data:$?"
        touch "$IMDS/new" 2>&1; echo "write:$?"
        findmnt -no OPTIONS "$IMDS"
        """,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{emulator.get_bytes('meta-data/instance-id').decode()} instance-id:0" in out
    assert "credentials:1" in out
    assert "user-data:1" in out
    assert "write:1" in out
    assert "Read-only file system" in out
    assert out.strip().splitlines()[-1].startswith("ro,")


def test_the_host_mount_is_untouched_by_the_container(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--allow-other")
    in_a_container(mounted, 'cat "$IMDS/instance-id"')
    assert (mounted.path / "instance-id").read_bytes() == emulator.get_bytes(
        "meta-data/instance-id"
    )
    assert not (mounted.path.parent / f"{mounted.path.name}-in-container").is_mount()
