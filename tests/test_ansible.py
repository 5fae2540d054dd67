"""The Ansible playbook in scripts/ansible reads facts from a real mount (ansible-core is a
test-only dependency: the playbook is documentation that must keep working)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from imdsfs.emulator import Emulator

from .conftest import Mounted

PLAYBOOK = Path(__file__).parent.parent / "scripts" / "ansible" / "imds-facts.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@pytest.mark.skipif(
    not ANSIBLE_PLAYBOOK.exists() and shutil.which("ansible-playbook") is None,
    reason="ansible-core is not installed (pip install -e '.[test]')",
)
def test_the_playbook_turns_the_mount_into_local_facts(
    make_mount: Callable[..., Mounted], emulator: Emulator, tmp_path: Path
) -> None:
    mounted = make_mount(emulator)
    facts_file = tmp_path / "facts.d" / "imds.fact"
    env = {
        **os.environ,
        "LC_ALL": "C.UTF-8",  # ansible refuses to start without a UTF-8 locale
        "ANSIBLE_HOME": str(tmp_path / "ansible"),  # nothing written to ~/.ansible
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
    }
    command = [
        str(ANSIBLE_PLAYBOOK) if ANSIBLE_PLAYBOOK.exists() else "ansible-playbook",
        "-i", "localhost,",
        "-c", "local",
        "-e", f"ansible_python_interpreter={sys.executable}",
        "-e", f"imds={mounted.path}",
        "-e", f"facts_file={facts_file}",
        str(PLAYBOOK),
    ]  # fmt: skip
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr

    identity = json.loads(emulator.get_bytes("dynamic/instance-identity/document"))
    facts = json.loads(facts_file.read_text())
    assert facts == {
        "instance_id": emulator.get_bytes("meta-data/instance-id").decode(),
        "instance_type": "m5.large",
        "availability_zone": "us-east-1a",
        "region": identity["region"],
        "account_id": identity["accountId"],
        "private_ip": emulator.get_bytes("meta-data/local-ipv4").decode(),
        "security_groups": emulator.get_bytes("meta-data/security-groups").decode().split("\n"),
        "name": emulator.get_bytes("meta-data/tags/instance/Name").decode(),
        "spot_action": "",
    }
