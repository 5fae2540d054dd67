"""Azure's Instance Metadata Service (IMDS).

- Where: ``http://169.254.169.254`` (paths under ``/metadata/``), or ``--endpoint``. No
  environment variable moves it: ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` (azure-identity, MSAL)
  moves only the managed-identity token endpoint, and ``IMDS_ENDPOINT`` is Azure Arc's agent,
  read with ``IDENTITY_ENDPOINT`` for Arc's tokens; neither names an instance-metadata service.
- How: every request carries ``Metadata: true`` and an ``api-version``, pinned per category
  (`PINNED`). A service that refuses one answers 400 naming the versions it has (an older
  IMDS: Azure Stack Hub, say); the newest of those is used from then on (`ApiVersions`).
  Azure allows 5 requests per second per VM: the provider declares it (`rate_limit`), the
  transport keeps to it.
- Layout: ``instance/`` is the ``/metadata/instance`` document as a tree (``_azure_tree``),
  read whole in one request whatever path is asked for, and refreshed whole when any of its
  paths' TTL runs out; ``scheduledevents`` and ``attested/document`` are what their URLs
  return; ``user-data`` is ``compute/userData`` base64-decoded, absent when it is empty.
- Secrets: user data in both forms, ``customData`` (IMDS serves it empty today; it is user
  data too), and the attested document (a signed proof of this VM's identity, like EC2's
  pkcs7). Managed-identity tokens are no files: each is asked for with a ``resource``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import urllib.parse
from collections.abc import Mapping

from .._azure_tree import expand
from .._paths import MAX_NODES, SecretRules, is_listing
from .._provider import Bulk, ListingEntry, NodeKind, Provider, StaticHeaders, check_endpoint
from .._ratelimit import RateLimit
from .._settings import ClientConfig
from .._transport import Transport
from .._ttl import rules

__all__ = ["PINNED", "ApiVersions", "AzureProvider"]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254"
HEADERS = {"Metadata": "true"}
DOCUMENT = "instance/"  # the mount path the whole document is read as
# The api-version each category is asked with first: instance and attested share the
# service's main list; scheduled events have their own, whose newest is 2020-07-01.
PINNED = {"instance": "2023-11-15", "attested": "2023-11-15", "scheduledevents": "2020-07-01"}
_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits: \d takes any script's

_HOUR = 3600.0
_LONG = 6 * _HOUR  # fixed for the life of the VM (a resize restarts it)
_SECONDS = 5.0  # changes on its own, and someone may be waiting for it
_CHANGING = ("tags", "tagsList/**")  # under compute/: set through the Azure API any time
_FOR_LIFE = (  # under compute/
    "azEnvironment",
    "location",
    "name",
    "offer",
    "osType",
    "physicalZone",
    "provider",
    "publisher",
    "resourceGroupName",
    "resourceId",
    "sku",
    "subscriptionId",
    "version",
    "vmId",
    "vmSize",
    "zone",
    "osProfile/**",
    "storageProfile/imageReference/**",
)


class AzureProvider(Provider):
    name = "azure"
    # userData and customData are strings; should one come as an object or array, what is in
    # it is as secret.
    secrets = SecretRules(
        (
            "user-data",
            "instance/compute/userData",
            "instance/compute/userData/**",
            "instance/compute/customData",
            "instance/compute/customData/**",
            "attested/**",
        )
    )
    # First match wins; the rest (listings included) keep the default, a minute. A document
    # read refreshes every path in it, so the shortest TTL read sets how often it is asked.
    ttl_rules = (
        *rules(_SECONDS, "scheduledevents", *(f"instance/compute/{n}" for n in _CHANGING)),
        *rules(_LONG, *(f"instance/compute/{name}" for name in _FOR_LIFE)),
    )
    rate_limit = RateLimit(5, 1.0)
    # user-data shows when the document has it; the rest of the root is the mount's own.
    root_extras = (ListingEntry("user-data", NodeKind.FILE, "user-data"),)

    def __init__(self, config: ClientConfig, environ: Mapping[str, str]) -> None:
        super().__init__(config, environ)
        self.versions = ApiVersions()

    @classmethod
    def resolve_endpoint(cls, config: ClientConfig, environ: Mapping[str, str]) -> str:
        """The flag, else the well-known address (see the module docstring: no variable)."""
        if config.endpoint is not None:
            return check_endpoint(config.endpoint)
        return DEFAULT_ENDPOINT

    def url(self, path: str) -> str:
        """Azure's path addressing: ``instance/compute/vmId`` →
        ``/metadata/instance/compute/vmId?api-version=V&format=text``; a directory of the
        document is its JSON (``format=json``). The root, ``attested/`` and ``user-data``
        are the mount's own (no URL of Azure's answers them): a snapshot keeps them there."""
        category = path.split("/", 1)[0]
        query = f"api-version={self.versions.of(category)}"
        if category == "instance":
            query += "&format=json" if is_listing(path) else "&format=text"
        return f"{self.endpoint}/metadata/{path}?{query}"

    def authenticator(self, transport: Transport) -> StaticHeaders:
        return StaticHeaders(HEADERS)

    def bulk(self, path: str) -> Bulk | None:
        """Every path but the two with URLs of their own is read from the whole document."""
        if path in ("scheduledevents", "attested/document"):
            return None
        return _DOCUMENT_READ

    def known(self, path: str) -> bytes | None:
        """The root's listing and ``attested/``'s are the mount's own, not the document's:
        a document that cannot be read hides nothing but itself."""
        return _OWN_LISTINGS.get(path)

    def renegotiate(self, url: str, body: bytes) -> bool:
        return self.versions.refused(url, body)


def files_from_document(body: bytes) -> dict[str, bytes]:
    """The mount's files and listings that the ``/metadata/instance`` document *body*
    holds: the document's tree under ``instance/``, and ``user-data``. ValueError if *body*
    is not a JSON object, or more than the mount would show."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise ValueError("the instance document is nested too deep") from None
    if not isinstance(document, dict):
        raise ValueError("the instance document is not a JSON object")
    found = expand(document, DOCUMENT, limit=MAX_NODES)
    user_data = _user_data(document)
    if user_data:
        found["user-data"] = user_data
    return found


def _user_data(document: dict[str, object]) -> bytes:
    """``compute/userData``, base64-decoded; empty when there is none, or it is not base64."""
    compute = document.get("compute")
    encoded = compute.get("userData") if isinstance(compute, dict) else None
    if not isinstance(encoded, str) or not encoded:
        return b""
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        log.warning("compute/userData is not base64: no user-data file")
        return b""


_DOCUMENT_READ = Bulk("", files_from_document, source=DOCUMENT, always=True)
_OWN_LISTINGS = {"": b"attested/\ninstance/\nscheduledevents\n", "attested/": b"document\n"}


class ApiVersions:
    """The api-version each category (``instance``, ``attested``, ``scheduledevents``) is
    asked with: `PINNED`, until the service refuses it. Azure's 400 for an api-version it
    does not have names the newest it has (``{"error": ..., "newest-versions": [...]}``);
    the newest of those replaces it, as cloud-init falls back to an older version."""

    def __init__(self) -> None:
        self._current = dict(PINNED)

    def of(self, category: str) -> str:
        """The version for *category*; the mount's own paths are the instance's."""
        return self._current.get(category, self._current["instance"])

    def refused(self, url: str, body: bytes) -> bool:
        """The service answered 400 with *body* to *url*: whether *url*'s category now has
        another version to try. Concurrent refusals of one version replace it once."""
        path, _, query = url.partition("?")
        category = path.split("/metadata/", 1)[-1].split("/", 1)[0]
        sent = urllib.parse.parse_qs(query).get("api-version", [""])[0]
        current = self.of(category)
        if sent != current:
            return True  # another request's refusal replaced it already
        named = _named_versions(body)
        if not named or max(named) == current:
            return False  # a 400 for another reason
        self._current[category] = max(named)
        log.warning(
            "the metadata service has no api-version %s for %s; using %s, the newest it names",
            current,
            category,
            max(named),
        )
        return True


def _named_versions(body: bytes) -> list[str]:
    """The versions a 400 names (``newest-versions``); none when it names none."""
    try:
        answer = json.loads(body)
    except ValueError:
        return []
    named = answer.get("newest-versions") if isinstance(answer, dict) else None
    if not isinstance(named, list):
        return []
    return [v for v in named if isinstance(v, str) and _VERSION.fullmatch(v)]
