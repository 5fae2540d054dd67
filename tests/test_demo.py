"""scripts/demo.sh, what `make demo` runs: the README's first command must work for every cloud."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imdsfs.providers import PROVIDERS

DEMO = Path(__file__).parent.parent / "scripts" / "demo.sh"


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_the_demo_shows_each_clouds_tree_and_unmounts(provider: str) -> None:
    env = {**os.environ, "PROVIDER": provider, "PY": sys.executable}
    result = subprocess.run(
        [str(DEMO)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"== {provider} emulator serving" in result.stdout
    assert result.stdout.rstrip().endswith("== unmounted cleanly")
    assert "$ ls -l" in result.stdout
