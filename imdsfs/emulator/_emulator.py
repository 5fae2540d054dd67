"""``Emulator``: the public handle tests and ``imdsfs emulate`` use to run a fake IMDS.

It owns the pieces (document, tokens, counters, faults, HTTP server) and runs the server on
a background thread, so synchronous tests, trio tests and the CLI all drive it the same way.
Every setter is safe to call while requests are in flight and takes effect on the next one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import get_args

from .._document import InstanceDocument
from ._defaults import default_document
from ._instance import EVENT_CODES, SPOT_ACTIONS, LiveInstance
from ._protocol import ImdsService, Response, TokenMode
from ._served import ServedEmulator
from ._state import Counters, Faults, TokenStore

__all__ = ["Emulator"]


class Emulator(ServedEmulator):
    """A faithful local IMDS over real HTTP, serving one instance document.

    ``with Emulator() as emu:`` (or ``async with``) starts it on a free port of 127.0.0.1;
    ``emu.url`` is then ``http://127.0.0.1:<port>``. The document is copied: changes made
    through ``set``/``delete`` and the scenarios never touch the caller's object.
    """

    def __init__(
        self,
        document: InstanceDocument | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: TokenMode = "required",
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        faults: Faults | None = None,
        seed: int | None = None,
    ) -> None:
        _check_token_mode(tokens)
        counters = Counters()
        self._clock = clock
        rng = random.Random(seed)
        # The document's generator is derived from the seed too, but kept apart so that
        # credential rotation does not shift the fault sequence.
        document_rng = random.Random(rng.getrandbits(64))
        base = document.copy() if document is not None else default_document()
        self._instance = LiveInstance(base, clock, document_rng)
        self._tokens = TokenStore(clock)
        self._imds = ImdsService(
            self._instance, self._tokens, counters, token_mode=tokens, enabled=enabled
        )
        super().__init__(self._imds, counters, host=host, port=port, faults=faults, rng=rng)

    # -- live settings --------------------------------------------------------------------

    @property
    def tokens(self) -> TokenMode:
        return self._imds.token_mode

    @tokens.setter
    def tokens(self, mode: TokenMode) -> None:
        _check_token_mode(mode)
        self._imds.token_mode = mode

    @property
    def enabled(self) -> bool:
        return self._imds.enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._imds.enabled = value

    @property
    def hop_limit_exceeded(self) -> bool:
        """When True, token PUTs get no response at all, as when the hop limit is too low."""
        return self._imds.hop_limit_exceeded

    @hop_limit_exceeded.setter
    def hop_limit_exceeded(self, value: bool) -> None:
        self._imds.hop_limit_exceeded = value

    @property
    def token_ttl_header(self) -> bool:
        """When False, token PUTs are answered without the granted-TTL header (broken IMDS)."""
        return self._imds.token_ttl_header

    @token_ttl_header.setter
    def token_ttl_header(self, value: bool) -> None:
        self._imds.token_ttl_header = value

    @property
    def rotate_credentials_every(self) -> float | None:
        return self._instance.rotation_period

    @rotate_credentials_every.setter
    def rotate_credentials_every(self, period: float | None) -> None:
        """Rotate all credentials every ``period`` seconds of the emulator clock."""
        self._instance.set_rotation_period(period)

    # -- the instance ---------------------------------------------------------------------

    def set(self, path: str, value: str | bytes | Mapping[str, object]) -> None:
        """Create or replace ``/latest/<path>``; a mapping is a subtree, as in the document."""
        self._instance.set(path, value)

    def alternate(self, path: str, values: Sequence[str | bytes]) -> None:
        """Serve ``/latest/<path>`` as each of *values* in turn, the next one on every read (a
        value that changes, and changes length, on every fetch). ``set`` or ``delete`` ends it."""
        self._instance.alternate(path, [v.encode() if isinstance(v, str) else v for v in values])

    def delete(self, path: str) -> None:
        """Remove ``/latest/<path>`` (leaf or directory); KeyError if it does not exist."""
        self._instance.delete(path)

    def leaves(self) -> dict[str, bytes]:
        """Every leaf served now, by its path under ``/latest/`` (``meta-data/ami-id``,
        ``user-data``), from the document itself: no listing is parsed to find them."""
        return self._instance.leaves()

    def get_bytes(self, path: str) -> bytes:
        """What a GET of ``/latest/<path>`` returns now, ignoring tokens and faults."""
        body = self._instance.read(path)
        if body is None:
            raise KeyError(path)
        return body

    def set_raw(
        self,
        path: str,
        body: bytes = b"",
        *,
        status: int = 200,
        content_type: str = "text/plain",
        headers: Mapping[str, str] | None = None,
        trickle: float = 0.0,
        endless: bool = False,
    ) -> None:
        """Answer every request for ``/latest/<path>`` with exactly this, whatever its method
        or token: a hostile or broken IMDS (an HTML page with 200, a redirect, a huge body).

        ``trickle`` sends the body one byte at a time, that many seconds apart; ``endless``
        repeats it until the client hangs up, without a Content-Length (a slowloris).
        ``path`` may be ``api/token``. ``clear_raw`` restores the faithful answer.
        """
        if trickle < 0:
            raise ValueError("trickle must be >= 0 seconds")
        self._imds.overrides[f"/latest/{path}"] = Response(
            status,
            body,
            content_type,
            tuple((headers or {}).items()),
            trickle=trickle,
            endless=endless,
        )

    def clear_raw(self, path: str | None = None) -> None:
        """Drop the ``set_raw`` answer for ``path`` (KeyError if none), or every one."""
        if path is None:
            self._imds.overrides.clear()
        else:
            del self._imds.overrides[f"/latest/{path}"]

    def issued_tokens(self) -> list[str]:
        """Every token value issued so far: what a test looks for in logs that must not
        hold it."""
        return self._tokens.issued()

    def revoke_tokens(self) -> None:
        """Every token issued so far gets 401 from now on."""
        self._tokens.revoke_all()

    def rotate_credentials(self) -> None:
        self._instance.rotate_credentials()

    def schedule_spot_interruption(self, after: float = 0.0, action: str = "terminate") -> None:
        """After ``after`` seconds: ``spot/instance-action`` and ``spot/termination-time``."""
        _check_choice("action", action, SPOT_ACTIONS)
        self._instance.schedule(after, lambda: self._instance.spot_interruption(action))

    def schedule_rebalance(self, after: float = 0.0) -> None:
        """After ``after`` seconds: ``events/recommendations/rebalance``."""
        self._instance.schedule(after, self._instance.rebalance)

    def schedule_maintenance_event(self, after: float = 0.0, code: str = "system-reboot") -> None:
        """After ``after`` seconds: one active event in ``events/maintenance/scheduled``."""
        _check_choice("code", code, tuple(EVENT_CODES))
        self._instance.schedule(after, lambda: self._instance.maintenance_event(code))


def _check_token_mode(mode: str) -> None:
    _check_choice("tokens", mode, get_args(TokenMode))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
