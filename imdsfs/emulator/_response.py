"""What a metadata service hands the HTTP server: an answer now, an answer later, or none.

Shared by every emulated cloud: ``_server.py`` writes these, and each service (EC2's
``ImdsService``, GCE's ``GceService``) decides them. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ._state import Counters

__all__ = ["Hold", "Response", "Service", "content_length", "plain_envelope"]


@dataclass(frozen=True)
class Response:
    """One answer. The service's ``envelope`` turns it into the header lines on the wire;
    ``headers`` holds the ones particular to this answer (``ETag``, ``Location``, ...)."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()
    # Hostile answers only (``Emulator.set_raw``); real IMDS sends its body at once.
    trickle: float = 0.0  # > 0: send the body one byte at a time, this many seconds apart
    endless: bool = False  # repeat the body until the client hangs up (no Content-Length)


@dataclass(frozen=True)
class Hold:
    """An answer that is not ready yet (a long-poll): the server calls ``poll(seconds)``, which
    waits at most that long and returns the Response once there is one, until ``deadline``
    (``time.monotonic()``, or None for no deadline); then it sends ``expire()``.

    The server, not the service, does the waiting, so that ``stop()`` and a client that hangs
    up end it at once, and the request holds only its own worker thread meanwhile."""

    deadline: float | None
    poll: Callable[[float], Response | None]
    expire: Callable[[], Response]


class Service(Protocol):
    """The rules of one metadata service, as the HTTP server sees them."""

    @property
    def counters(self) -> Counters: ...

    @property
    def server_name(self) -> str:
        """The ``Server`` header (also on the server's own error pages)."""
        ...

    def answer(
        self, method: str, target: str, headers: Mapping[str, str]
    ) -> Response | Hold | None:
        """The answer to a request, or None for no answer at all (the client just waits).

        ``target`` is the request target as sent (path and query); ``headers`` maps lower-case
        header names to values."""
        ...

    def envelope(self, response: Response, date: str) -> list[tuple[str, str]]:
        """Every header line of ``response`` in wire order, ``Content-Length`` included
        (except for an endless body), with ``date`` as the ``Date``."""
        ...


def content_length(response: Response) -> list[tuple[str, str]]:
    """The ``Content-Length`` line, or none for a body that never ends."""
    return [] if response.endless else [("Content-Length", str(len(response.body)))]


def plain_envelope(response: Response, date: str, server: str) -> list[tuple[str, str]]:
    """``Content-Type``, the answer's own headers, ``Content-Length``, ``Date``, ``Server``
    (none when *server* is ""), ``Connection: close``: the order EC2's Nitro answers in, and
    the one the services without captures of their own (Azure, Neutron's proxy) follow."""
    return [
        ("Content-Type", response.content_type),
        *response.headers,
        *content_length(response),
        ("Date", date),
        *([("Server", server)] if server else []),
        ("Connection", "close"),
    ]
