"""``GceEmulator``: the public handle for a local, faithful GCE metadata server.

The same shape as ``Emulator`` (EC2): it owns the document, and its lifecycle (counters,
faults, the HTTP server on a background thread) is every emulator's (``ServedEmulator``);
every setter is safe while requests are in flight. Metadata lives under
``url + "/computeMetadata/v1/"``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from importlib import resources

from ._gce_document import GceDocument
from ._gce_live import MAINTENANCE_EVENTS, LiveGce
from ._gce_protocol import GceService, default_form
from ._served import ServedEmulator
from ._state import Counters, Faults

__all__ = ["GceEmulator", "default_gce_document"]


def default_gce_document() -> GceDocument:
    """A fresh copy of the packaged realistic instance (``gce-instance.json``)."""
    text = resources.files(__package__).joinpath("gce-instance.json").read_bytes()
    return GceDocument.from_json(text, source="gce-instance.json")


class GceEmulator(ServedEmulator):
    """A GCE metadata server over real HTTP, serving one instance.

    ``with GceEmulator() as emu:`` (or ``async with``) starts it on a free port of 127.0.0.1.
    ``document`` is a ``GceDocument`` or a mapping in the recursive JSON form GCE returns
    (``{"instance": {...}, "project": {...}, ...}``); it is copied, never changed.
    """

    def __init__(
        self,
        document: GceDocument | Mapping[str, object] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        faults: Faults | None = None,
        seed: int | None = None,
    ) -> None:
        counters = Counters()
        rng = random.Random(seed)
        if document is None:
            tree = default_gce_document()
        elif isinstance(document, GceDocument):
            tree = document.copy()
        else:
            tree = GceDocument.from_dict(document)
        # Tokens draw from a generator of their own, so minting does not shift the faults.
        self._live = LiveGce(tree, clock, random.Random(rng.getrandbits(64)), counters)
        service = GceService(self._live, counters, default_host=host)
        super().__init__(service, counters, host=host, port=port, faults=faults, rng=rng)
        self._gce = service

    # -- lifecycle (ServedEmulator's, with two hooks) ----------------------------------------

    def _serving(self) -> None:
        self._gce.default_host = self.netloc  # the Host its redirects name

    def _stopping(self) -> None:
        self._live.wake_all()  # long-polls see `stopping` now, not at their next poll

    # -- live settings --------------------------------------------------------------------

    @property
    def rotate_tokens_every(self) -> float | None:
        return self._live.rotation_period

    @rotate_tokens_every.setter
    def rotate_tokens_every(self, period: float | None) -> None:
        """A new access token for every service account each ``period`` seconds of the
        emulator clock (besides the new one minted when a token expires)."""
        self._live.set_rotation_period(period)

    # -- the instance ---------------------------------------------------------------------

    def get_bytes(self, path: str) -> bytes:
        """What ``GET /computeMetadata/v1/<path>`` returns now in its default form, ignoring
        headers and faults: a listing for ``instance/``, a leaf's bytes, a token's JSON.
        KeyError unless that GET would be a 200 (a directory without its slash is a 301)."""
        rel = path.lstrip("/")
        stripped = rel.strip("/")
        segments = stripped.split("/") if stripped else []
        node, _ = self._live.read(lambda tree: tree.find(segments))
        asked_directory = rel == "" or rel.endswith("/")
        if node is None or (node.kind == "directory") != asked_directory:
            raise KeyError(path)
        if node.kind == "token":
            token = self._live.access_token(node.account or "")
            if token is None:
                raise KeyError(path)
            return token
        if node.kind == "identity":
            raise KeyError(path)  # a 400 without an audience
        response, _ = self._live.read(lambda tree: default_form(tree, segments))
        if response is None:
            raise KeyError(path)
        return response.body

    def set(self, path: str, value: object) -> None:
        """Create or replace ``/computeMetadata/v1/<path>``: a str, bytes (UTF-8), whole
        number, list, or a mapping for a subtree in the recursive (camelCase) form. Wakes the
        long-polls watching it."""
        self._live.change(lambda tree: tree.set(path, value))

    def delete(self, path: str) -> None:
        """Remove ``/computeMetadata/v1/<path>`` (leaf or directory); KeyError if absent."""
        self._live.change(lambda tree: tree.delete(path))

    def leaves(self) -> dict[str, bytes]:
        """Every file's default bytes by its path under /computeMetadata/v1/ (``instance/id``),
        from the document itself; not the minted ``token`` and ``identity``."""
        found, _ = self._live.read(lambda tree: tree.leaves())
        return found

    def document(self) -> dict[str, object]:
        """The whole instance now, in the recursive JSON form (a copy)."""
        found, _ = self._live.read(lambda tree: tree.to_dict())
        return dict(found)

    # -- scenarios ------------------------------------------------------------------------

    def schedule_maintenance_event(
        self, after: float = 0.0, value: str = "MIGRATE_ON_HOST_MAINTENANCE"
    ) -> None:
        """After ``after`` seconds of the emulator clock, ``instance/maintenance-event`` reads
        ``value`` (``NONE`` ends the event)."""
        if value not in MAINTENANCE_EVENTS:
            raise ValueError(f"value must be one of {', '.join(MAINTENANCE_EVENTS)}, not {value!r}")
        self._live.schedule(after, lambda tree: tree.set("instance/maintenance-event", value))

    def schedule_preemption(self, after: float = 0.0) -> None:
        """After ``after`` seconds: ``instance/preempted`` reads ``TRUE`` and
        ``instance/maintenance-event`` ``TERMINATE_ON_HOST_MAINTENANCE``, both at once, as
        GCE shows them before it stops a preemptible (Spot) VM."""

        def preempt(tree: GceDocument) -> None:
            tree.set("instance/preempted", "TRUE")
            tree.set("instance/maintenance-event", "TERMINATE_ON_HOST_MAINTENANCE")

        self._live.schedule(after, preempt)

    def rotate_tokens(self) -> None:
        """Every service account gets a new access token (``expires_in`` from 3599 again)."""
        self._live.rotate_tokens()
