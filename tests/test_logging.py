"""Log lines: timestamps on a terminal, syslog priorities and no timestamps in the journal."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from imdsfs._logging import JournalFormatter
from imdsfs.emulator import Emulator

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")


def dump_log(emulator: Emulator, tmp_path: Path, journal: str | None) -> list[str]:
    """The stderr lines of ``imdsfs dump --debug``; *journal*: what JOURNAL_STREAM says,
    ``"match"`` for the device and inode of that very stderr, as systemd sets it."""
    log_path = tmp_path / "stderr"
    with log_path.open("wb") as stderr:
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal == "match":
            info = os.fstat(stderr.fileno())
            journal = f"{info.st_dev}:{info.st_ino}"
        if journal is not None:
            env["JOURNAL_STREAM"] = journal
        command = [sys.executable, "-m", "imdsfs", "dump", "--debug", "--endpoint", emulator.url]
        result = subprocess.run(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=env, timeout=60, check=False
        )
    assert result.returncode == 0, log_path.read_text()
    lines = log_path.read_text().splitlines()
    assert lines, "--debug logged nothing"
    return lines


def test_on_a_terminal_lines_carry_a_timestamp_and_level(
    emulator: Emulator, tmp_path: Path
) -> None:
    lines = dump_log(emulator, tmp_path, journal=None)
    assert all(TIMESTAMP.match(line) for line in lines), lines[:3]
    assert any(" DEBUG imdsfs._transport: GET " in line for line in lines)


def test_in_the_journal_lines_carry_a_priority_and_no_timestamp(
    emulator: Emulator, tmp_path: Path
) -> None:
    lines = dump_log(emulator, tmp_path, journal="match")
    assert all(re.match(r"<[2-7]>(imdsfs|httpx)[.:]", line) for line in lines), lines[:3]
    assert any(line.startswith("<7>imdsfs._transport: GET ") for line in lines)


def test_an_inherited_journal_stream_is_not_ours(emulator: Emulator, tmp_path: Path) -> None:
    # A child of a service inherits JOURNAL_STREAM even when its stderr goes elsewhere.
    lines = dump_log(emulator, tmp_path, journal="1:2")
    assert all(TIMESTAMP.match(line) for line in lines), lines[:3]


def test_every_line_of_a_multiline_record_keeps_its_priority() -> None:
    record = logging.LogRecord("imdsfs._fs", logging.ERROR, "", 0, "one\ntwo", None, None)
    assert JournalFormatter().format(record) == "<3>imdsfs._fs: one\n<3>two"
