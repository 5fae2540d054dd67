"""Log lines that suit where they end up: a terminal, or systemd's journal.

On a terminal (or a file) each line carries a timestamp and the level. When stderr *is* the
journal, journald adds the timestamp, and the level goes in a ``<N>`` prefix (the syslog
priority, sd-daemon(3)) that journald turns into the entry's priority, so
``journalctl -p warning -u imdsfs`` works. systemd tells a service its stderr is the journal
through ``$JOURNAL_STREAM`` (``DEVICE:INODE`` of that stream); the variable is inherited, so
it only counts when it matches our actual stderr (systemd.exec(5)).
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["error_line", "setup_logging", "stderr_is_journal"]

# logging level → syslog priority, as journald reads it from a "<N>" line prefix.
_PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """``<4>imdsfs._cache: message``: priority prefix, no timestamp (journald has one)."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITIES.get(record.levelno, 6)
        # One entry per line: prefix continuation lines too (tracebacks), or they lose it.
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).split("\n"))


def stderr_is_journal() -> bool:
    """True when stderr is the stream systemd connected to the journal."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):  # no stderr at all
        return False
    return f"{info.st_dev}:{info.st_ino}" == f"{device}:{inode}"


def error_line(text: str) -> str:
    """*text*, a message that ends the program, as written to stderr: with the ``<3>`` (err)
    prefix on each line when stderr is the journal, so ``journalctl -p err`` shows it."""
    if not stderr_is_journal():
        return text
    return "\n".join(f"<{_PRIORITIES[logging.ERROR]}>{line}" for line in text.split("\n"))


def setup_logging(debug: bool) -> None:
    """Log to stderr at INFO (DEBUG with ``--debug``), formatted for where stderr goes."""
    handler = logging.StreamHandler()
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler])
    # httpx logs every request URL at INFO: useful only when debugging.
    logging.getLogger("httpx").setLevel(logging.INFO if debug else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
