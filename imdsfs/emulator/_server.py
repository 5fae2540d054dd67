"""HTTP for the emulator: sockets, threads, header order, and the faults that are I/O.

Built on ``http.server``: a pool of daemon threads, each serving one connection at a time, every
connection closed after one response (as IMDS does). What to answer comes from
``ImdsService``; this module adds the envelope real IMDS sends (``Server: EC2ws``, ``Date``,
``Content-Length``, ``Connection: close``) and carries out fault plans: delays that end early
on ``stop()`` or when the client hangs up, and connection resets (RST, not FIN, via
``SO_LINGER`` 0).
"""

from __future__ import annotations

import logging
import math
import queue
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import TCPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from ._protocol import Response
from ._state import Counters, FaultPlan, Faults

__all__ = ["ImdsHttpServer", "Service"]

log = logging.getLogger("imdsfs.emulator")

# Request bodies are not expected (the token PUT has none); read at most this much so that
# closing the socket does not turn into a reset because of unread data.
_MAX_BODY = 64 * 1024
# How often a waiting handler checks for stop() and for a client that went away.
_POLL = 0.02


class Service(Protocol):
    """What the server needs from a cloud's rules: EC2's ``ImdsService`` and the others.

    A service may also set ``server_header`` (the ``Server`` value it answers with, "" for
    none; EC2's ``EC2ws`` otherwise) and ``wants_query`` (True: ``answer`` gets the path with
    its query string, as Azure's rules need it; counters and faults always see the bare path).
    """

    counters: Counters

    def answer(self, method: str, path: str, headers: Mapping[str, str]) -> Response | None: ...


class ImdsHttpServer(HTTPServer):
    """A threaded HTTP server bound to one ``ImdsService`` and a live ``Faults`` source.

    Its workers are daemon threads: a stalled handler must never keep the process alive."""

    request_queue_size = 256  # many clients connect at once (readdir fans out)

    def __init__(
        self,
        address: tuple[str, int],
        service: Service,
        faults: Faults,
        rng: random.Random,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.service = service
        self.faults = faults  # replaced by Emulator when its `faults` attribute is assigned
        self.stopping = threading.Event()
        self._rng = rng
        self._rng_lock = threading.Lock()
        self._connections: queue.SimpleQueue[tuple[Any, Any] | None] = queue.SimpleQueue()
        self._pool_lock = threading.Lock()
        self._workers = 0
        self._idle = 0
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the connection to an idle worker, starting a new one only when none is idle.

        ``ThreadingMixIn`` starts a thread per connection, which cost the emulator more CPU than
        answering did; benchmarks share the machine with it. A stalled request still holds only
        its own worker, so the pool grows as far as concurrency needs."""
        with self._pool_lock:
            spawn = self._idle == 0
            if spawn:
                self._workers += 1
            else:
                self._idle -= 1
        self._connections.put((request, client_address))
        if spawn:
            name = f"imds-emulator-worker:{self.server_port}"
            threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while (item := self._connections.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
            with self._pool_lock:
                self._idle += 1

    def server_close(self) -> None:
        super().server_close()
        with self._pool_lock:
            workers = self._workers
        for _ in range(workers):  # one stop sign each; busy workers take theirs when done
            self._connections.put(None)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup we do not need.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def plan_faults(self, method: str, path: str) -> FaultPlan:
        with self._rng_lock:
            return self.faults.plan(method, path, self._rng)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("emulator: error while handling a request from %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    server: ImdsHttpServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that never finishes its request line does not hold a thread

    def version_string(self) -> str:
        return str(getattr(self.server.service, "server_header", "EC2ws"))

    def log_message(self, format: str, *args: Any) -> None:
        # Only the request line is ever logged; header values (tokens) never are.
        log.debug("%s - %s", self.address_string(), format % args)

    # http.server dispatches on do_<METHOD>; every method goes through the same rules, and
    # the ones IMDS does not serve get their 405 from ImdsService.
    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _handle(self) -> None:
        self.close_connection = True
        self._discard_body()
        path = urlsplit(self.path).path
        record = self.server.service.counters.arrived(self.command, path)
        plan = self.server.plan_faults(self.command, path)
        if not self._wait(plan.delay):
            self.server.service.counters.answered(record, 0)  # before the client can see it
            self._abandon()
            return
        if plan.reset:
            self.server.service.counters.answered(record, 0)
            self._reset()
            return
        if plan.status is not None:
            extra = () if plan.retry_after is None else (("Retry-After", str(plan.retry_after)),)
            response: Response | None = Response(plan.status, headers=extra)
        else:
            wants_query = getattr(self.server.service, "wants_query", False)
            target = self.path if wants_query else path
            response = self.server.service.answer(self.command, target, self._header_map())
        if response is None:  # hold the request until the client gives up or we stop
            self.server.service.counters.answered(record, 0)
            self._wait(math.inf)
            self._abandon()
            return
        self.server.service.counters.answered(record, response.status)
        self.log_request(response.status, len(response.body))
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response_only(response.status)
        self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        if not response.endless:  # an endless body is delimited by the close that never comes
            self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Date", self.date_time_string())
        if server := self.version_string():
            self.send_header("Server", server)
        self.send_header("Connection", "close")
        try:
            self.end_headers()
            if self.command != "HEAD":
                self._write_body(response)
        except OSError as error:  # the client went away mid-response: its problem, not ours
            log.debug("emulator: client disconnected while answering: %s", error)

    def _write_body(self, response: Response) -> None:
        """The body at once, or (hostile overrides) byte by byte and possibly forever."""
        if not (response.trickle or response.endless):
            self.wfile.write(response.body)
            return
        step = 1 if response.trickle else max(1, len(response.body))
        while True:
            for start in range(0, len(response.body), step):
                self.wfile.write(response.body[start : start + step])
                self.wfile.flush()
                if response.trickle and not self._wait(response.trickle):
                    return
            if not response.endless or not self._wait(_POLL):
                return

    def _header_map(self) -> dict[str, str]:
        """Lower-case header names; the first occurrence wins, as with ``Message.get``."""
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), value)
        return headers

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and 0 < int(length) <= _MAX_BODY:
            self.rfile.read(int(length))

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; False if stop() was called or the client hung up first."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if self.server.stopping.wait(min(left, _POLL)) or self._client_gone():
                return False

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _reset(self) -> None:
        """Close with a TCP RST: SO_LINGER with a zero timeout discards instead of FIN."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._abandon()

    def _abandon(self) -> None:
        """Close the connection without a response. ``rfile`` holds a reference to the
        socket, so it is closed first for the close to take effect now."""
        self.rfile.close()
        self.connection.close()
