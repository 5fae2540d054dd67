"""The lifecycle every emulator shares: one service, one HTTP server thread.

Every cloud's handle (EC2, GCE, Azure, OpenStack) inherits it, so ``start``/``stop``,
``with``/``async with``, ``url``, ``counters`` and a settable ``faults`` behave the same on
every cloud.
"""

from __future__ import annotations

import random
import threading
from types import TracebackType
from typing import Self

from ._response import Service
from ._server import ImdsHttpServer
from ._state import Counters, Faults

__all__ = ["ServedEmulator"]


class ServedEmulator:
    """A service served over real HTTP on a background thread; subclasses build the service."""

    def __init__(
        self,
        service: Service,
        counters: Counters,
        *,
        host: str,
        port: int,
        faults: Faults | None,
        rng: random.Random,
    ) -> None:
        self.host = host
        self.port = port
        self.counters = counters
        self._service = service
        self._rng = rng  # the fault RNG; each subclass derives its own data RNG apart from it
        self._faults = faults if faults is not None else Faults()
        self._server: ImdsHttpServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        server = ImdsHttpServer((self.host, self.port), self._service, self._faults, self._rng)
        self.port = server.server_port
        self._server = server
        self._serving()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # keeps stop() fast
            name=f"imds-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving. Idempotent; stalled requests are dropped at once."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()  # wakes every waiting handler, which then closes its socket
        self._stopping()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _serving(self) -> None:
        """The server is bound (``port`` is known) and about to serve: a subclass's hook."""

    def _stopping(self) -> None:
        """The server is stopping: a subclass's hook to wake what waits on its own terms."""

    @property
    def url(self) -> str:
        """The server root, ``http://127.0.0.1:PORT``, without a trailing slash."""
        return f"http://{self.netloc}"

    @property
    def netloc(self) -> str:
        """``127.0.0.1:PORT`` (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults
        if self._server is not None:
            self._server.faults = faults

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
