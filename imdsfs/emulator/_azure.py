"""``AzureEmulator``: a faithful local Azure Instance Metadata Service, for tests and demos.

Same lifecycle as EC2's ``Emulator`` (``start``/``stop``, ``with``/``async with``, ``url``,
``counters``, a settable ``faults``, ``clock=``, ``seed=``). The wire rules are in
``_azure_protocol``; this handle owns the state and is what tests change it through. Every
setter is safe while requests are in flight and takes effect on the next one.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Mapping, Sequence

from ._azure_document import (
    API_VERSIONS,
    Json,
    default_azure_document,
    delete_path,
    every_leaf,
    is_leaf,
    leaf_text,
    set_path,
    split_path,
    walk,
)
from ._azure_events import ScheduledEvents
from ._azure_identity import ManagedIdentity, TokenIssuer
from ._azure_protocol import AzureService
from ._response import Response
from ._served import ServedEmulator
from ._state import Counters, Faults

__all__ = ["AzureEmulator", "ManagedIdentity"]

# The tenant and identities of the packaged VM: one system-assigned identity, one
# user-assigned (reached by client_id, object_id or msi_res_id).
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def _default_identities(document: Mapping[str, Json]) -> list[ManagedIdentity]:
    compute = document.get("compute")
    subscription = rg = ""
    if isinstance(compute, dict):
        subscription = str(compute.get("subscriptionId", ""))
        rg = str(compute.get("resourceGroupName", ""))
    user_assigned = (
        f"/subscriptions/{subscription}/resourcegroups/{rg}/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/imdsfs-demo-identity"
    )
    return [
        ManagedIdentity(
            "5a1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
            system_assigned=True,
        ),
        ManagedIdentity(
            "7d9b9ddf-4da8-4589-a703-ea8b7e311069",
            "621f3586-6b13-4f09-a0c2-111f7bb2b256",
            resource_id=user_assigned,
        ),
    ]


class AzureEmulator(ServedEmulator):
    """Azure IMDS over real HTTP on 127.0.0.1, serving one instance document.

    The document is what ``GET /metadata/instance?api-version=<newest>`` returns (``compute``
    and ``network``); it is copied, so changes never touch the caller's object.
    """

    def __init__(
        self,
        document: Mapping[str, Json] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        faults: Faults | None = None,
        seed: int | None = None,
        identities: Sequence[ManagedIdentity] | None = None,
        tenant_id: str = TENANT_ID,
    ) -> None:
        rng = random.Random(seed)
        data_rng = random.Random(rng.getrandbits(64))  # tokens do not shift the fault sequence
        base = copy.deepcopy(dict(document)) if document is not None else default_azure_document()
        if identities is None:
            identities = _default_identities(base)
        counters = Counters()
        self._events = ScheduledEvents(clock)
        self._tokens = TokenIssuer(clock, data_rng, tenant_id, list(identities))
        self._azure = AzureService(base, self._events, self._tokens, counters, clock)
        super().__init__(self._azure, counters, host=host, port=port, faults=faults, rng=rng)

    # -- the instance document --------------------------------------------------------------

    def get_json(self, api_version: str = API_VERSIONS[-1]) -> dict[str, Json]:
        """The instance document as ``GET /metadata/instance`` returns it for ``api_version``
        (the newest by default: the whole document)."""
        return self._azure.instance_view(api_version, extended=False)

    def set(self, path: str, value: Json) -> None:
        """Create or replace ``path`` (``compute/tags``, ``network/interface/0/macAddress``);
        a dict or list is a subtree. Strings are what the real service holds."""
        with self._azure.lock:
            set_path(self._azure.document, path, value)

    def delete(self, path: str) -> None:
        """Remove ``path`` (an array item: later ones move up); KeyError if absent."""
        with self._azure.lock:
            delete_path(self._azure.document, path)

    def leaf_text(self, path: str) -> bytes:
        """What ``format=text`` returns for ``path`` now; KeyError if there is no such leaf
        (absent, or an object or array, which get a 400 instead)."""
        segments = split_path(path)
        found, node = walk(self.get_json(), segments) if segments is not None else (False, None)
        if not found or not is_leaf(node):
            raise KeyError(path)
        return leaf_text(node)

    def leaves(self, api_version: str = API_VERSIONS[-1]) -> dict[str, bytes]:
        """Every leaf's path (``compute/location``) and its ``format=text`` bytes."""
        return dict(every_leaf(self.get_json(api_version)))

    # -- scheduled events -------------------------------------------------------------------

    def schedule_event(
        self,
        after: float = 0.0,
        event_type: str = "Reboot",
        *,
        source: str = "Platform",
        duration: int | None = None,
        description: str | None = None,
    ) -> str:
        """After ``after`` seconds (emulator clock) an event for this VM appears in
        ``/metadata/scheduledevents`` and ``DocumentIncarnation`` goes up by one. Returns the
        ``EventId``. Types: Freeze, Reboot, Redeploy, Preempt (Spot eviction), Terminate."""
        with self._azure.lock:
            compute = self._azure.document.get("compute")
            name = compute.get("name", "") if isinstance(compute, dict) else ""
        return self._events.schedule(
            after,
            event_type,
            [str(name)],
            source=source,
            duration=duration,
            description=description,
        )

    def start_event(self, event_id: str) -> None:
        """The event starts (``EventStatus: Started``, blank ``NotBefore``); KeyError if none."""
        self._events.start(event_id)

    def complete_event(self, event_id: str) -> None:
        """The event ends and leaves the document; KeyError if there is none."""
        self._events.complete(event_id)

    @property
    def document_incarnation(self) -> int:
        return self._events.incarnation

    # -- identity, limits, hostile answers ----------------------------------------------------

    @property
    def identities(self) -> list[ManagedIdentity]:
        """The identities assigned to the VM; assign ``[]`` for a VM without any."""
        return list(self._tokens.identities)

    @identities.setter
    def identities(self, identities: Sequence[ManagedIdentity]) -> None:
        self._tokens.identities = list(identities)
        self._tokens.forget()

    def issued_tokens(self) -> list[str]:
        """Every access token handed out so far (what a leak test looks for in logs)."""
        return self._tokens.issued()

    def expire_tokens(self) -> None:
        """Cached tokens are forgotten: the next token request gets a new one."""
        self._tokens.forget()

    @property
    def throttled(self) -> int:
        """Requests answered 429 by the rate limits (5/s, identity 20/s) so far."""
        return self._azure.limit.refused + self._azure.identity_limit.refused

    @property
    def rate_limit(self) -> int:
        """Requests allowed in any one second (5, as on Azure). Raise it to test without."""
        return self._azure.limit.limit

    @rate_limit.setter
    def rate_limit(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the limit must be at least 1 request per second")
        self._azure.limit.limit = limit

    @property
    def newest_api_version(self) -> str | None:
        """The newest api-version served (None: every one, the default). Set an older one to
        play an IMDS that lags Azure's (Azure Stack Hub): newer versions get the 400 naming
        the newest it has. Managed-identity requests are not affected."""
        return self._azure.newest_version

    @newest_api_version.setter
    def newest_api_version(self, version: str | None) -> None:
        self._azure.newest_version = version

    def reset_rate_limit(self) -> None:
        """Empty both windows, so the next requests are not throttled by earlier ones."""
        self._azure.limit.reset()
        self._azure.identity_limit.reset()

    def set_raw(
        self,
        path: str,
        body: bytes = b"",
        *,
        status: int = 200,
        content_type: str = "application/json; charset=utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer every request for ``path`` (``/metadata/instance``, no query) with exactly
        this, before any rule: a broken or hostile IMDS. ``clear_raw`` undoes it."""
        self._azure.overrides[path] = Response(
            status, body, content_type, tuple((headers or {}).items())
        )

    def clear_raw(self, path: str | None = None) -> None:
        """Drop the ``set_raw`` answer for ``path`` (KeyError if none), or every one."""
        if path is None:
            self._azure.overrides.clear()
        else:
            del self._azure.overrides[path]
