"""``OpenStackEmulator``: a faithful local Nova metadata service (as seen through Neutron).

Same lifecycle as EC2's ``Emulator`` (``start``/``stop``, ``with``/``async with``, ``url``,
``counters``, a settable ``faults``, ``clock=``, ``seed=``). It serves Nova's EC2-compatible
tree (``/latest/``, ``/2009-04-04/``, ...) and the OpenStack format (``/openstack/``), and
writes the same content as a config drive (``config_drive``). Rules: ``_openstack_protocol``
and ``_openstack_instance``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._openstack_instance import (
    NovaNotFound,
    NovaServerError,
    OpenStackInstance,
    default_openstack_data,
)
from ._openstack_protocol import NovaService
from ._response import Response
from ._served import ServedEmulator
from ._state import Counters, Faults

__all__ = ["OpenStackEmulator"]


class OpenStackEmulator(ServedEmulator):
    """Nova's metadata service over real HTTP on 127.0.0.1, serving one instance.

    The data (``openstack-instance.json`` by default) is copied: changes never touch the
    caller's object. ``clock`` is accepted for the same signature as the other emulators;
    Nova's answers do not depend on time.
    """

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        faults: Faults | None = None,
        seed: int | None = None,
    ) -> None:
        rng = random.Random(seed)
        data_rng = random.Random(rng.getrandbits(64))  # random_seed apart from the faults
        self._instance = OpenStackInstance(
            data if data is not None else default_openstack_data(), data_rng
        )
        self._clock = clock
        counters = Counters()
        self._nova = NovaService(self._instance, counters)
        super().__init__(self._nova, counters, host=host, port=port, faults=faults, rng=rng)

    def get_bytes(self, path: str) -> bytes:
        """What a GET of ``/<path>`` returns now (``latest/meta-data/instance-id``,
        ``openstack/latest/meta_data.json``), ignoring faults; KeyError for a 404 and
        LookupError for Nova's 500."""
        try:
            return self._instance.lookup("/" + path.lstrip("/")).body
        except NovaNotFound:
            raise KeyError(path) from None
        except NovaServerError:
            raise LookupError(f"{path}: Nova answers 500 here") from None

    def set(self, path: str, value: Any) -> None:
        """Create or replace a node. ``meta-data/...`` and ``user-data`` are the EC2 tree in
        instance-document form (a dict is a subtree, bytes are raw; user data is also the
        OpenStack ``user_data``); ``openstack/meta_data.json``, ``.../network_data.json``,
        ``.../vendor_data.json`` (a dict) or a key below one (``openstack/meta_data.json/
        meta/role``); ``openstack/password``."""
        self._instance.set(path, value)

    def delete(self, path: str) -> None:
        """Remove a node (same paths as ``set``); KeyError if it does not exist."""
        self._instance.delete(path)

    def ec2_meta_data(self, version: str = "latest") -> dict[str, Any]:
        """The EC2 meta-data as Nova builds it for ``version`` (lists and ints included)."""
        return self._instance.ec2_meta_data(version)

    def config_drive(self, directory: str | os.PathLike[str]) -> list[str]:
        """Write the config drive's files (``openstack/latest/meta_data.json``, ``user_data``,
        ``ec2/latest/meta-data.json``, ... for every version Nova writes) under
        ``directory``, from the same state the server answers from; returns their paths."""
        return self._instance.config_drive(directory)

    def set_raw(
        self,
        path: str,
        body: bytes = b"",
        *,
        status: int = 200,
        content_type: str = "text/plain; charset=UTF-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer every request for ``path`` (``/latest/meta-data/``) with exactly this: a
        broken or hostile service. ``clear_raw`` undoes it."""
        self._nova.overrides[path] = Response(
            status, body, content_type, tuple((headers or {}).items())
        )

    def clear_raw(self, path: str | None = None) -> None:
        if path is None:
            self._nova.overrides.clear()
        else:
            del self._nova.overrides[path]
