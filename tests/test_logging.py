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


def run_journaled(argv: list[str], tmp_path: Path, journal: bool) -> tuple[int, list[str]]:
    """Exit status and stderr lines of ``imdsfs ARGV``, with stderr the journal or not."""
    log_path = tmp_path / "stderr"
    with log_path.open("wb") as stderr:
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal:
            info = os.fstat(stderr.fileno())
            env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
        command = [sys.executable, "-m", "imdsfs", *argv]
        result = subprocess.run(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=env, timeout=60, check=False
        )
    return result.returncode, log_path.read_text().splitlines()


def test_a_configuration_error_reaches_the_journal_at_priority_err(tmp_path: Path) -> None:
    # IMDSFS_OPTS="--ttl bogus" in /etc/default/imdsfs: `journalctl -u imdsfs -p err` shows it.
    status, lines = run_journaled(["mount", "--ttl", "bogus", str(tmp_path)], tmp_path, True)
    assert status == 2
    assert lines == ["<3>imdsfs: TTL rule 'bogus' is not PATTERN=SECONDS"]


def test_a_bad_option_value_reaches_the_journal_at_priority_err(tmp_path: Path) -> None:
    # argparse's own errors too, from the subcommand's parser as from the top one.
    status, lines = run_journaled(["mount", "--deadline", "soon", str(tmp_path)], tmp_path, True)
    assert status == 2
    assert lines[-1] == "<3>imdsfs mount: error: argument --deadline: invalid float value: 'soon'"
    assert lines[0].startswith("usage: imdsfs mount ")  # the usage stays at the default priority
    status, lines = run_journaled(["mount", "--bogus", str(tmp_path)], tmp_path, True)
    assert status == 2
    assert lines[-1] == "<3>imdsfs: error: unrecognized arguments: --bogus"


def test_on_a_terminal_an_error_has_no_priority_prefix(tmp_path: Path) -> None:
    status, lines = run_journaled(["mount", "--ttl", "bogus", str(tmp_path)], tmp_path, False)
    assert status == 2
    assert lines == ["imdsfs: TTL rule 'bogus' is not PATTERN=SECONDS"]
