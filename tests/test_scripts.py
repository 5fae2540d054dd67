"""The example scripts in scripts/examples, each run against a real mount of the emulator."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from imdsfs.emulator import AzureEmulator, Emulator, GceEmulator

from .conftest import Mounted

EXAMPLES = Path(__file__).parent.parent / "scripts" / "examples"
# Listings and spot notices re-read quickly, so appearing files show up within a second.
FAST = ("--ttl", "**/=0.2", "--ttl", "spot/**=0.2", "--ttl", "negative=0.2")


def script_env(mounted: Mounted) -> dict[str, str]:
    """The mount, and this venv's imdsfs (the scripts run `imdsfs wait`)."""
    imdsfs = str(Path(sys.executable).parent / "imdsfs")
    return {**os.environ, "IMDS": str(mounted.path), "IMDSFS": imdsfs}


def script(
    name: str, mounted: Mounted, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXAMPLES / name), *args],
        env=script_env(mounted),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,
    )


@contextlib.contextmanager
def watching(
    name: str, mounted: Mounted, *args: str, stderr: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A watcher script running in the background, its stderr into *stderr*; at the end it
    is killed with everything it started (an `imdsfs wait` left behind would hold the
    mount, and the test, forever)."""
    with stderr.open("wb") as log:
        watcher = subprocess.Popen(
            [str(EXAMPLES / name), *args],
            env=script_env(mounted),
            stderr=log,
            start_new_session=True,
        )
    try:
        yield watcher
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(watcher.pid, signal.SIGKILL)
        watcher.wait()


def value(emulator: Emulator, path: str) -> str:
    return emulator.get_bytes(f"meta-data/{path}").decode()


# --- instance-facts.sh ------------------------------------------------------------------------


def test_instance_facts_for_a_motd(make_mount: Callable[..., Mounted], emulator: Emulator) -> None:
    emulator.delete("meta-data/public-ipv4")  # an instance without a public address
    mounted = make_mount(emulator)
    result = script("instance-facts.sh", mounted)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"instance   {value(emulator, 'instance-id')} (m5.large, on-demand)",
        f"name       {value(emulator, 'tags/instance/Name')}",
        "placement  us-east-1a",
        f"image      {value(emulator, 'ami-id')}",
        f"addresses  {value(emulator, 'local-ipv4')} private, - public",
    ]


def test_instance_facts_for_a_prompt(mounted: Mounted, emulator: Emulator) -> None:
    result = script("instance-facts.sh", mounted, "--prompt")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{value(emulator, 'instance-id')}@us-east-1a\n"


# --- spot-watcher.sh --------------------------------------------------------------------------


def test_spot_watcher_drains_once_the_notice_appears_and_exits(
    make_mount: Callable[..., Mounted], emulator: Emulator, tmp_path: Path
) -> None:
    mounted = make_mount(emulator, *FAST)
    drained = tmp_path / "drained"
    drain = f'echo "$SPOT_ACTION $SPOT_TIME" > {drained}'
    log = tmp_path / "stderr"
    with watching("spot-watcher.sh", mounted, "--", "sh", "-c", drain, stderr=log) as watcher:
        time.sleep(0.5)
        assert watcher.poll() is None, "the watcher must wait while there is no notice"
        assert not drained.exists()
        emulator.schedule_spot_interruption(after=0, action="stop")
        assert watcher.wait(timeout=15) == 0
    stderr = log.read_text()
    notice = json.loads(value(emulator, "spot/instance-action"))
    assert drained.read_text() == f"stop {notice['time']}\n"
    assert f"interruption notice: stop at {notice['time']}" in stderr


def test_spot_watcher_exits_with_the_drain_commands_status(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    emulator.schedule_spot_interruption(after=0)
    mounted = make_mount(emulator)
    result = script("spot-watcher.sh", mounted, "--", "sh", "-c", "exit 3")
    assert result.returncode == 3
    assert "drain command exited 3" in result.stderr


# --- with-instance-credentials.sh -------------------------------------------------------------


def test_credentials_are_exported_to_the_command(mounted: Mounted, emulator: Emulator) -> None:
    role = value(emulator, "iam/security-credentials/")
    expected = json.loads(value(emulator, f"iam/security-credentials/{role}"))
    result = script("with-instance-credentials.sh", mounted, "--", "env")
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert env["AWS_ACCESS_KEY_ID"] == expected["AccessKeyId"]
    assert env["AWS_SECRET_ACCESS_KEY"] == expected["SecretAccessKey"]
    assert env["AWS_SESSION_TOKEN"] == expected["Token"]
    assert env["AWS_CREDENTIAL_EXPIRATION"] == expected["Expiration"]
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"


def test_a_missing_role_fails_without_running_the_command(mounted: Mounted, tmp_path: Path) -> None:
    result = script(
        "with-instance-credentials.sh", mounted, "-r", "nope", "--", "touch", "ran", cwd=tmp_path
    )
    assert result.returncode == 1
    assert "nope: No such file or directory" in result.stderr  # cat says why
    assert result.stderr.splitlines()[-1].startswith("with-instance-credentials: cannot read ")
    assert not (tmp_path / "ran").exists()


def test_an_instance_without_a_role_is_told_so(
    make_mount: Callable[..., Mounted], emulator: Emulator
) -> None:
    emulator.delete("meta-data/iam/security-credentials/imdsfs-demo-role")
    mounted = make_mount(emulator)
    result = script("with-instance-credentials.sh", mounted, "--", "true")
    assert result.returncode == 1
    assert result.stderr == "with-instance-credentials: this instance has no IAM role\n"


def test_spot_watcher_refuses_a_directory_that_is_not_a_mount(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(EXAMPLES / "spot-watcher.sh"), "--", "true"],
        env={
            **os.environ,
            "IMDS": str(tmp_path),
            "IMDSFS": str(Path(sys.executable).parent / "imdsfs"),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "is not in an imdsfs mount" in result.stderr
    assert "cannot wait for the notice" in result.stderr


# --- gce-preemption-watcher.sh -----------------------------------------------------------------


def test_gce_preemption_watcher_runs_the_command_once_preempted(
    make_mount: Callable[..., Mounted], gce_emulator: GceEmulator, tmp_path: Path
) -> None:
    mounted = make_mount(gce_emulator, "--provider", "gce")
    ran = tmp_path / "ran"
    log = tmp_path / "stderr"
    args = ("--", "touch", str(ran))
    with watching("gce-preemption-watcher.sh", mounted, *args, stderr=log) as watcher:
        time.sleep(1.5)
        assert watcher.poll() is None, "it must wait while the VM is not preempted"
        gce_emulator.schedule_preemption(after=0.0)
        gce_emulator.get_bytes("instance/preempted")  # apply it now, on the emulator's clock
        assert watcher.wait(timeout=10) == 0
    stderr = log.read_text()
    assert ran.exists()
    assert "preempted; running touch" in stderr


# --- azure-event-watcher.sh -------------------------------------------------------------------


def test_azure_event_watcher_acts_on_the_types_it_is_given_only(
    make_mount: Callable[..., Mounted], azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    """A Freeze (not asked for) changes the document and wakes the loop, which goes on
    waiting; the Preempt after it runs the command with the event in its environment."""
    mounted = make_mount(azure_emulator, "--provider", "azure")
    ran = tmp_path / "ran"
    log = tmp_path / "stderr"
    record = f'echo "$AZURE_EVENT_TYPE $AZURE_EVENT_NOT_BEFORE" > {ran}'
    args = ("-t", "Preempt,Terminate", "--", "sh", "-c", record)
    with watching("azure-event-watcher.sh", mounted, *args, stderr=log) as watcher:
        azure_emulator.schedule_event(event_type="Freeze")
        time.sleep(5 + 2)  # the Freeze has been seen (scheduled events' TTL is 5 s)
        assert watcher.poll() is None, "a Freeze was not asked for"
        azure_emulator.schedule_event(event_type="Preempt")
        assert watcher.wait(timeout=15) == 0
    events = json.loads((mounted.path / "scheduledevents").read_bytes())["Events"]
    preempt = next(event for event in events if event["EventType"] == "Preempt")
    assert ran.read_text() == f"Preempt {preempt['NotBefore']}\n"
    assert "Preempt not before" in log.read_text()


def test_azure_event_watcher_refuses_a_mount_of_another_cloud(mounted: Mounted) -> None:
    result = script("azure-event-watcher.sh", mounted, "--", "true")
    assert result.returncode == 2
    assert "cannot wait (is" in result.stderr
