"""Google Compute Engine's metadata server.

- Where: ``http://metadata.google.internal`` (the mount adds ``/computeMetadata/v1/``), or
  ``169.254.169.254`` where that name does not resolve; ``GCE_METADATA_HOST`` (``host[:port]``,
  as google-auth and google-cloud-go read it) overrides both, ``--endpoint`` overrides all.
- How: every request carries ``Metadata-Flavor: Google``; there is no token.
- Layout: the mount root is ``/computeMetadata/v1/`` (``instance/``, ``project/``, ...);
  listings mark directories with a trailing ``/``, as on EC2, so the shared listing rules apply
  unchanged.
- Secrets: service-account tokens and identities, and every attribute (instance and project
  attributes carry user-data, startup scripts, ssh keys, sometimes credentials).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from .._paths import SecretRules
from .._provider import Provider, StaticHeaders, check_endpoint
from .._settings import ClientConfig
from .._transport import Transport
from .._ttl import rules

__all__ = ["GceProvider"]

HOST_ENV = "GCE_METADATA_HOST"
DEFAULT_HOST = "metadata.google.internal"
FALLBACK_ENDPOINT = "http://169.254.169.254"
ROOT = "/computeMetadata/v1/"
FLAVOR = {"Metadata-Flavor": "Google"}

_HOUR = 3600.0
_LONG = 6 * _HOUR  # fixed for the life of the instance
_MINUTES = 60.0  # changes through the Compute API while the instance runs
_SECONDS = 5.0  # changes on its own, and someone may be waiting for it


class GceProvider(Provider):
    name = "gce"
    secrets = SecretRules(
        (
            "instance/service-accounts/*/token",
            "instance/service-accounts/*/identity",
            "instance/attributes/**",
            "project/attributes/**",
        )
    )
    ttl_rules = (
        *rules(_SECONDS, "**/"),
        *rules(
            _SECONDS,
            "instance/maintenance-event",
            "instance/preempted",
            "instance/upcoming-maintenance",
            "instance/upcoming-maintenance/**",
        ),
        *rules(
            _LONG,
            "instance/id",
            "instance/name",
            "instance/hostname",
            "instance/zone",
            "instance/machine-type",
            "instance/cpu-platform",
            "instance/image",
            "project/project-id",
            "project/numeric-project-id",
            "universe/**",
        ),
        *rules(_MINUTES, "instance/service-accounts/**", "instance/network-interfaces/**"),
    )

    @classmethod
    def resolve_endpoint(cls, config: ClientConfig, environ: Mapping[str, str]) -> str:
        """The flag, else ``GCE_METADATA_HOST``, else the name (or its address, when the name
        does not resolve: no DNS in a container, say)."""
        if config.endpoint is not None:
            return check_endpoint(config.endpoint)
        host = environ.get(HOST_ENV, "").strip()
        if host:
            return check_endpoint(f"http://{host}")
        try:
            socket.getaddrinfo(DEFAULT_HOST, 80, proto=socket.IPPROTO_TCP)
        except OSError:
            return FALLBACK_ENDPOINT
        return f"http://{DEFAULT_HOST}"

    def url(self, path: str) -> str:
        return f"{self.endpoint}{ROOT}{path}"

    def authenticator(self, transport: Transport) -> StaticHeaders:
        return StaticHeaders(FLAVOR)
