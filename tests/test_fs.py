"""The mounted filesystem, read by real programs: every byte, size, name and errno."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imdsfs.emulator import Emulator

from .conftest import Mounted

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def run(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=30, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def all_leaves(emulator: Emulator) -> dict[str, bytes]:
    """Mount path -> bytes of every leaf the emulator serves."""
    return {path.removeprefix("meta-data/"): body for path, body in emulator.leaves().items()}


# --- layout -----------------------------------------------------------------------------------


def test_root_lists_the_meta_data_categories_plus_dynamic_and_user_data(
    mounted: Mounted, emulator: Emulator
) -> None:
    categories = [e.rstrip("/") for e in emulator.get_bytes("meta-data/").decode().split("\n")]
    assert sorted(os.listdir(mounted.path)) == sorted([*categories, "dynamic", "user-data"])


def test_every_directory_lists_exactly_the_names_of_its_imds_listing(
    mounted: Mounted, emulator: Emulator
) -> None:
    def check(imds_dir: str, fs_dir: Path) -> None:
        listing = emulator.get_bytes(imds_dir).decode().split("\n")
        expected = {e.rstrip("/") for e in listing}
        if imds_dir == "meta-data/public-keys/":
            expected = {part for e in listing for part in e.split("=", 1)}
        assert set(os.listdir(fs_dir)) == expected, imds_dir
        for entry in listing:
            quirk = imds_dir == "meta-data/public-keys/"
            name = entry.split("=", 1)[0] + "/" if quirk else entry
            if name.endswith("/"):
                check(imds_dir + name, fs_dir / name.rstrip("/"))

    check("meta-data/placement/", mounted.path / "placement")
    check("meta-data/network/", mounted.path / "network")
    check("meta-data/public-keys/", mounted.path / "public-keys")
    check("dynamic/", mounted.path / "dynamic")


def test_every_leaf_reads_as_exactly_the_bytes_imds_serves(
    mounted: Mounted, emulator: Emulator
) -> None:
    leaves = all_leaves(emulator)
    assert len(leaves) > 60
    for path, expected in leaves.items():
        assert (mounted.path / path).read_bytes() == expected, path
        assert (mounted.path / path).stat().st_size == len(expected), path


def test_public_key_name_is_a_symlink_to_its_index(mounted: Mounted, emulator: Emulator) -> None:
    first = emulator.get_bytes("meta-data/public-keys/").decode().split("\n")[0]
    index, name = first.split("=", 1)
    link = mounted.path / "public-keys" / name
    assert os.readlink(link) == index
    key = emulator.get_bytes(f"meta-data/public-keys/{index}/openssh-key")
    assert (link / "openssh-key").read_bytes() == key


def test_find_sees_every_leaf_as_a_regular_file(mounted: Mounted, emulator: Emulator) -> None:
    found = run("find", str(mounted.path), "-type", "f")
    assert found.returncode == 0, found.stderr
    files = {p.removeprefix(f"{mounted.path}/") for p in found.stdout.decode().splitlines()}
    assert files == set(all_leaves(emulator))


# --- real programs ----------------------------------------------------------------------------


def test_cat_prints_the_value_without_an_added_newline(
    mounted: Mounted, emulator: Emulator
) -> None:
    result = run("cat", str(mounted.path / "instance-id"))
    assert result.stdout == emulator.get_bytes("meta-data/instance-id")
    assert not result.stdout.endswith(b"\n")


def test_stat_reports_exact_sizes(mounted: Mounted, emulator: Emulator) -> None:
    for path in ("instance-id", "placement/region", "dynamic/instance-identity/document"):
        result = run("stat", "-c", "%s", str(mounted.path / path))
        imds = path if path.startswith("dynamic/") else f"meta-data/{path}"
        assert int(result.stdout) == len(emulator.get_bytes(imds)), path


def test_ls_l_of_a_directory_costs_one_concurrent_round_of_requests(
    mounted: Mounted, emulator: Emulator
) -> None:
    (mounted.path / "placement").stat()  # the root listing is not what this test measures
    emulator.faults.latency = 0.2
    emulator.counters.reset()
    started = time.monotonic()
    result = run("ls", "-l", str(mounted.path / "placement"))
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    leaves = emulator.get_bytes("meta-data/placement/").decode().split("\n")
    sizes = {
        line.split()[-1]: int(line.split()[4]) for line in result.stdout.decode().splitlines()[1:]
    }
    assert sizes == {e: len(emulator.get_bytes(f"meta-data/placement/{e}")) for e in leaves}
    # listing + one concurrent round of leaves: 2 latencies (+ the token), not one per file.
    assert elapsed < 0.2 * (len(leaves) + 1)
    assert emulator.counters.count("GET") == len(leaves) + 1


def test_grep_r_finds_the_region_everywhere_it_appears(
    mounted: Mounted, emulator: Emulator
) -> None:
    region = emulator.get_bytes("meta-data/placement/region").decode()
    result = run("grep", "-rl", region, str(mounted.path))
    hits = {p.removeprefix(f"{mounted.path}/") for p in result.stdout.decode().splitlines()}
    assert {"placement/region", "dynamic/instance-identity/document"} <= hits


def test_jq_parses_the_identity_document(mounted: Mounted, emulator: Emulator) -> None:
    result = run(
        "jq", "-r", ".instanceId", str(mounted.path / "dynamic/instance-identity/document")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == emulator.get_bytes("meta-data/instance-id").decode()


def test_user_data_is_binary_exact(mounted: Mounted, emulator: Emulator) -> None:
    expected = emulator.get_bytes("user-data")
    assert expected[:2] == b"\x1f\x8b"  # gzip: the binary case
    result = run("sha256sum", str(mounted.path / "user-data"))
    assert result.stdout.split()[0].decode() == hashlib.sha256(expected).hexdigest()
    assert (mounted.path / "user-data").read_bytes() == expected


def test_copy_tools_get_every_byte(mounted: Mounted, emulator: Emulator, tmp_path: Path) -> None:
    document = emulator.get_bytes("dynamic/instance-identity/document")
    shutil.copyfile(
        mounted.path / "dynamic/instance-identity/document", tmp_path / "doc"
    )  # sendfile
    assert (tmp_path / "doc").read_bytes() == document
    assert run("cp", "-r", str(mounted.path / "dynamic"), str(tmp_path / "copy")).returncode == 0
    assert (tmp_path / "copy/instance-identity/document").read_bytes() == document


def test_tar_archives_the_tree_with_exact_contents(
    mounted: Mounted, emulator: Emulator, tmp_path: Path
) -> None:
    archive = tmp_path / "imds.tar"
    result = run("tar", "-cf", str(archive), "-C", str(mounted.path), "placement", "dynamic")
    assert result.returncode == 0, result.stderr
    with tarfile.open(archive) as tar:
        member = tar.extractfile("placement/region")
        assert member is not None
        assert member.read() == emulator.get_bytes("meta-data/placement/region")


def test_python_reads_json_credentials(mounted: Mounted, emulator: Emulator) -> None:
    roles = emulator.get_bytes("meta-data/iam/security-credentials/").decode().split("\n")
    creds = json.loads((mounted.path / "iam/security-credentials" / roles[0]).read_bytes())
    assert creds["AccessKeyId"]


def test_df_works(mounted: Mounted) -> None:
    result = run("df", str(mounted.path))
    assert result.returncode == 0, result.stderr
    assert os.statvfs(mounted.path).f_namemax == 255


# --- change over time -------------------------------------------------------------------------

FAST = ("--ttl", "**=0.5", "--ttl", "negative=0.3")


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_spot_notice_appears_without_a_remount(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, *FAST)
    notice = mounted.path / "spot" / "instance-action"
    assert not notice.exists()
    emulator.schedule_spot_interruption(after=0)
    assert wait_for(notice.exists)
    assert notice.read_bytes() == emulator.get_bytes("meta-data/spot/instance-action")
    assert json.loads(notice.read_bytes())["action"] == "terminate"


def test_a_removed_tag_vanishes_and_a_changed_one_shows_its_new_size(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, *FAST)
    tags = mounted.path / "tags" / "instance"
    names = os.listdir(tags)
    assert names
    gone, changed = names[0], names[-1]
    (tags / changed).read_bytes()
    emulator.delete(f"meta-data/tags/instance/{gone}")
    emulator.set(f"meta-data/tags/instance/{changed}", "a much longer value than before, really")
    assert wait_for(lambda: gone not in os.listdir(tags))
    assert wait_for(lambda: (tags / changed).stat().st_size == 39)
    assert (tags / changed).read_bytes() == b"a much longer value than before, really"
    assert run("cat", str(tags / changed)).stdout == b"a much longer value than before, really"


def test_a_value_that_shrinks_is_never_read_with_its_old_size(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, *FAST)
    path = mounted.path / "tags/instance/Name"
    emulator.set("meta-data/tags/instance/Name", "x" * 100)
    assert wait_for(lambda: path.read_bytes() == b"x" * 100)
    emulator.set("meta-data/tags/instance/Name", "short")
    assert wait_for(lambda: path.read_bytes() == b"short")
    assert path.stat().st_size == 5


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "operation",
    [
        lambda p: open(p / "instance-id", "w"),  # noqa: SIM115
        lambda p: open(p / "instance-id", "r+b"),  # noqa: SIM115
        lambda p: open(p / "new-file", "x"),  # noqa: SIM115
        lambda p: os.mkdir(p / "newdir"),
        lambda p: os.unlink(p / "instance-id"),
        lambda p: os.rmdir(p / "placement"),
        lambda p: os.rename(p / "instance-id", p / "renamed"),
        lambda p: os.chmod(p / "instance-id", 0o777),
        lambda p: os.truncate(p / "instance-id", 0),
        lambda p: os.symlink("instance-id", p / "link"),
        lambda p: os.setxattr(p / "instance-id", "user.x", b"1"),
    ],
)
def test_every_change_is_refused_with_erofs(
    mounted: Mounted, operation: Callable[[Path], object]
) -> None:
    with pytest.raises(OSError) as raised:
        operation(mounted.path)
    assert raised.value.errno == errno.EROFS


def test_a_missing_path_is_enoent(mounted: Mounted) -> None:
    with pytest.raises(FileNotFoundError):
        (mounted.path / "no-such-category").read_bytes()
    result = run("cat", str(mounted.path / "placement" / "nope"))
    assert result.returncode == 1
    assert b"No such file or directory" in result.stderr


def test_imds_errors_become_eio_within_the_deadline(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--deadline", "1")
    os.listdir(mounted.path)
    emulator.faults.stall_next(100, seconds=30, path="/latest/meta-data/placement/region")
    started = time.monotonic()
    with pytest.raises(OSError) as raised:
        (mounted.path / "placement/region").read_bytes()
    assert raised.value.errno == errno.EIO
    assert time.monotonic() - started < 3  # a hang guard: the deadline is 1 s


def test_secrets_are_root_only_even_with_allow_other(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    mounted = make_mount(emulator, "--allow-other")
    role = emulator.get_bytes("meta-data/iam/security-credentials/").decode().split("\n")[0]
    secrets = [
        f"iam/security-credentials/{role}",
        "identity-credentials/ec2/security-credentials/ec2-instance",
        "user-data",
    ]
    for path in secrets:
        st = (mounted.path / path).stat()
        assert stat.S_IMODE(st.st_mode) == 0o400, path
        assert st.st_uid == 0, path
        denied = run(*NOBODY, "cat", str(mounted.path / path))
        assert denied.returncode == 1, path
        assert b"Permission denied" in denied.stderr, path
    assert stat.S_IMODE((mounted.path / "instance-id").stat().st_mode) == 0o444
    allowed = run(*NOBODY, "cat", str(mounted.path / "instance-id"))
    assert allowed.stdout == emulator.get_bytes("meta-data/instance-id")


def test_without_allow_other_other_users_cannot_enter(mounted: Mounted) -> None:
    denied = run(*NOBODY, "ls", str(mounted.path))
    assert denied.returncode != 0
    assert b"Permission denied" in denied.stderr


# --- lifecycle --------------------------------------------------------------------------------


def test_sigterm_unmounts_cleanly(make_mount: Callable[..., Mounted], emulator: Emulator) -> None:
    mounted = make_mount(emulator)
    mounted.process.terminate()
    assert mounted.process.wait(timeout=10) == 0
    assert not os.path.ismount(mounted.path)
    assert "Traceback" not in mounted.log()


def test_a_stale_mount_from_a_crash_is_recovered(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    crashed = make_mount(emulator)
    crashed.process.kill()
    crashed.expected_status = -9
    with pytest.raises(OSError) as raised:
        os.listdir(crashed.path)
    assert raised.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    again = make_mount(emulator)
    assert again.path != crashed.path
    # Mount a third time on the crashed mountpoint itself.
    from .conftest import finish_mount, start_mount

    recovered = start_mount(
        crashed.path, crashed.log_path.with_suffix(".2"), "--endpoint", emulator.url
    )
    try:
        assert (recovered.path / "instance-id").read_bytes() == emulator.get_bytes(
            "meta-data/instance-id"
        )
    finally:
        finish_mount(recovered)


@pytest.mark.parametrize(
    ("mountpoint", "message"),
    [("/nonexistent/imds", "No such file or directory"), ("/etc/hostname", "not a directory")],
)
def test_a_bad_mountpoint_is_one_clear_line_and_a_failure_status(
    fuse_available: None, mountpoint: str, message: str
) -> None:
    result = run(
        sys.executable, "-m", "imdsfs", "mount", "--endpoint", "http://127.0.0.1:9", mountpoint
    )
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0], lines
    assert mountpoint in lines[0], lines


def test_background_mount_returns_once_the_mount_answers(
    fuse_available: None, emulator: Emulator, tmp_path: Path
) -> None:
    mountpoint = tmp_path / "bg"
    mountpoint.mkdir()
    result = run(
        sys.executable, "-m", "imdsfs", "mount", "--endpoint", emulator.url, str(mountpoint)
    )
    try:
        assert result.returncode == 0, result.stderr
        assert os.path.ismount(mountpoint)
        assert (mountpoint / "instance-id").read_bytes() == emulator.get_bytes(
            "meta-data/instance-id"
        )
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def test_the_mount_table_shows_a_read_only_imdsfs(mounted: Mounted) -> None:
    line = next(
        m for m in Path("/proc/mounts").read_text().splitlines() if f" {mounted.path} " in m
    )
    assert re.match(rf"imds {re.escape(str(mounted.path))} fuse\.imdsfs ro,", line), line


def test_a_public_key_name_follows_its_index_when_the_listing_changes(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    keys = "meta-data/public-keys/"
    emulator.set_raw(keys, b"0=alice")
    mounted = make_mount(emulator, "--ttl", "public-keys/**=0.3")
    assert os.readlink(mounted.path / "public-keys/alice") == "0"
    emulator.set_raw(keys, b"0=bob\n1=alice")
    time.sleep(0.5)
    assert sorted(os.listdir(mounted.path / "public-keys")) == ["0", "1", "alice", "bob"]
    assert os.readlink(mounted.path / "public-keys/alice") == "1"


def test_a_deleted_file_goes_with_its_listing_not_its_own_ttl(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    emulator.set("meta-data/tags/instance/Temporary", "yes")
    mounted = make_mount(emulator, "--ttl", "tags/instance/=0.5")  # the values keep 60 s
    path = mounted.path / "tags/instance/Temporary"
    assert path.read_bytes() == b"yes"
    emulator.delete("meta-data/tags/instance/Temporary")
    time.sleep(1.0)
    assert not path.exists()
    assert "Temporary" not in os.listdir(mounted.path / "tags/instance")
