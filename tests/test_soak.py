"""A 30-second run of ``scripts/soak.py``: the soak's assertions, in every ``make test``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).parent.parent / "scripts" / "soak.py"


def test_a_short_soak_passes(fuse_available: None) -> None:
    result = subprocess.run(
        [sys.executable, str(SOAK), "--seconds", "30"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "result: PASS" in result.stdout
    assert "wrong bytes: 0" in result.stdout
