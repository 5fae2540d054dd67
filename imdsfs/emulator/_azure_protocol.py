"""Azure IMDS request rules: which status, headers and body a request gets.

Pure decisions over the live state, no sockets (``_server`` writes the answer). The checks
run in this order: the rate limit, ``X-Forwarded-For``, the ``Metadata`` header, duplicate
query parameters, the route, the method, ``api-version``, then the route's own rules.

From Microsoft's IMDS article, managed-identity article and REST spec, and real captures:
``Metadata: true`` is required (compared without case, as WALinuxAgent sends ``True``; the
identity endpoint wants it in lower case) and its absence is
``{"error":"Bad request. Required metadata header not specified"}``; a missing or unknown
``api-version`` is a 400 naming the three newest; ``X-Forwarded-For`` is rejected; duplicate
query parameters are rejected; leaves need ``format=text``; at most 5 requests per second
(identity: 20), else 429; compact JSON as ``application/json; charset=utf-8`` with
``Server: IMDS/150.870.65.1854`` and an ``x-ms-request-id``; identity errors are
``{"error": ..., "error_description": ...}`` (``Identity not found`` captured verbatim).

Decided here, where no source settled it (each is one constant below): X-Forwarded-For gets
400 (the article's error table lists no 403); the wording of the 400s for X-Forwarded-For,
duplicate parameters, a bad ``format``, ``format=json`` on a leaf and ``format=text`` on an
object or array (a 400 too), and of the 404, 405 and 429 bodies; text as
``text/plain; charset=utf-8`` without a final newline; ``Retry-After`` on a 429 (seconds until
the window has room); only admitted requests fill the window; the identity endpoint's own
limit does not count toward the general one; ``POST`` approvals of scheduled events are not
emulated (405): the server does not hand request bodies to the rules.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl, unquote

from ._azure_document import (
    API_VERSIONS,
    Json,
    at_version,
    is_leaf,
    leaf_text,
    split_path,
    walk,
)
from ._azure_events import EVENTS_VERSIONS, ScheduledEvents
from ._azure_identity import TokenIssuer, attested_document, attested_signature, new_request_id
from ._ratelimit import SlidingWindow
from ._response import Response, plain_envelope
from ._state import Counters

__all__ = ["AzureService"]

SERVER = "IMDS/150.870.65.1854"
JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"

METADATA_HEADER = "Bad request. Required metadata header not specified"
API_VERSION = (
    "Bad request. api-version is invalid or was not specified in the request. "
    "For more information refer to aka.ms/azureimds"
)
FORWARDED = "Bad request. Requests with an X-Forwarded-For header are not allowed"
DUPLICATE = "Bad request. Duplicate query parameters are not allowed"
BAD_FORMAT = "Bad request. The format query parameter must be json or text"
LEAF_NEEDS_TEXT = "Bad request. Leaf nodes are only supported with format=text"
NOT_LEAF_TEXT = "Bad request. format=text is only supported for leaf nodes"
NOT_FOUND = "Not found"
METHOD = "Method not allowed"
TOO_MANY = "Too many requests"

IDENTITY_METADATA = ("bad_request_102", "Required metadata header not specified")
IDENTITY_NOT_FOUND = ("invalid_request", "Identity not found")
IDENTITY_NO_RESOURCE = ("invalid_request", "Required query variable 'resource' is missing")
IDENTITY_NO_VERSION = ("invalid_request", "Required query variable 'api-version' is missing")
IDENTITY_BAD_VERSION = ("invalid_request", "Invalid value for query variable 'api-version'")
IDENTITY_TWO_IDS = (
    "invalid_request",
    "Only one of client_id, object_id and msi_res_id may be specified",
)
IDENTITY_FORWARDED = ("invalid_request", "Requests with an X-Forwarded-For header are not allowed")
IDENTITY_DUPLICATE = ("invalid_request", "Duplicate query parameters are not allowed")
IDENTITY_TOO_MANY = ("too_many_requests", "Too many requests")

IDENTITY_VERSIONS = tuple(v for v in API_VERSIONS if v >= "2018-02-01")
ATTESTED_VERSIONS = tuple(v for v in API_VERSIONS if v >= "2018-10-01")
EXTENDED_SINCE = "2021-03-01"
# What `extended=true` adds (cloud-init reads extended.compute.ppsType at provisioning).
EXTENDED: dict[str, Json] = {"compute": {"ppsType": "None"}}


class AzureService:
    """Azure IMDS for one VM: the document, events, identities and limits, behind one lock."""

    server_name = SERVER

    def __init__(
        self,
        document: dict[str, Json],
        events: ScheduledEvents,
        tokens: TokenIssuer,
        counters: Counters,
        clock: Callable[[], float],
    ) -> None:
        self.document = document  # guarded by `lock`
        self.lock = threading.RLock()
        self.events = events
        self.tokens = tokens
        self.counters = counters
        self.limit = SlidingWindow(5, 1.0, clock)
        self.identity_limit = SlidingWindow(20, 1.0, clock)
        self.overrides: dict[str, Response] = {}
        # The newest api-version this IMDS has (an older one's: Azure Stack Hub's lags
        # Azure's); None: every version. Identity requests are not affected.
        self.newest_version: str | None = None

    def envelope(self, response: Response, date: str) -> list[tuple[str, str]]:
        return plain_envelope(response, date, self.server_name)

    def answer(self, method: str, target: str, headers: Mapping[str, str]) -> Response | None:
        raw_path, _, query = target.partition("?")
        path = unquote(raw_path)
        override = self.overrides.get(path)
        if override is not None:
            return override
        identity = path.startswith("/metadata/identity")
        retry_after = (self.identity_limit if identity else self.limit).admit()
        if retry_after is not None:
            extra = (("Retry-After", str(retry_after)),)
            if identity:
                return _identity_error(429, IDENTITY_TOO_MANY, extra)
            return _error(429, TOO_MANY, extra)
        if identity:
            return self._identity(method, path, query, headers)
        if "x-forwarded-for" in headers:
            return _error(400, FORWARDED)
        if headers.get("metadata", "").lower() != "true":
            return _error(400, METADATA_HEADER)
        params = _query(query)
        if params is None:
            return _error(400, DUPLICATE)
        route = path.rstrip("/")
        if route == "/metadata/versions":
            return _only_get(method) or _json(200, {"apiVersions": list(API_VERSIONS)})
        if route == "/metadata/instance" or route.startswith("/metadata/instance/"):
            return _only_get(method) or self._instance(route, params)
        if route == "/metadata/attested/document":
            return _only_get(method) or self._attested(params)
        if route == "/metadata/scheduledevents":
            return _only_get(method) or self._scheduled_events(params)
        if route == "/metadata/loadbalancer":
            return (
                _only_get(method)
                or self._versioned(params, API_VERSIONS)
                or _error(404, "No load balancer metadata is found.")
            )
        return _error(404, NOT_FOUND)

    # -- /metadata/instance ---------------------------------------------------------------

    def instance_view(self, version: str, extended: bool) -> dict[str, Json]:
        """The document as ``version`` shows it, with ``extended`` when asked for."""
        with self.lock:
            view = at_version(self.document, version)
        assert isinstance(view, dict)
        if extended and version >= EXTENDED_SINCE:
            view["extended"] = copy.deepcopy(EXTENDED)
        return view

    def _instance(self, route: str, params: dict[str, str]) -> Response:
        refused = self._versioned(params, API_VERSIONS)
        if refused is not None:
            return refused
        segments = split_path(route.removeprefix("/metadata/instance"))
        view = self.instance_view(params["api-version"], params.get("extended") == "true")
        found, node = walk(view, segments) if segments is not None else (False, None)
        if not found:
            return _error(404, NOT_FOUND)
        fmt = params.get("format")
        if fmt not in (None, "json", "text"):
            return _error(400, BAD_FORMAT)
        if is_leaf(node):
            if fmt != "text":
                return _error(400, LEAF_NEEDS_TEXT)
            return Response(200, leaf_text(node), TEXT_TYPE, _request_id())
        if fmt == "text":
            return _error(400, NOT_LEAF_TEXT)
        return _json(200, node)

    def _versioned(self, params: Mapping[str, str], versions: tuple[str, ...]) -> Response | None:
        newest = self.newest_version
        return _versioned(params, tuple(v for v in versions if newest is None or v <= newest))

    # -- the other categories ---------------------------------------------------------------

    def _attested(self, params: dict[str, str]) -> Response:
        refused = self._versioned(params, ATTESTED_VERSIONS)
        if refused is not None:
            return refused
        with self.lock:
            compute = copy.deepcopy(self.document["compute"])
        assert isinstance(compute, dict)
        signed = attested_document(compute, params.get("nonce"), params["api-version"])
        return _json(200, {"encoding": "pkcs7", "signature": attested_signature(signed)})

    def _scheduled_events(self, params: dict[str, str]) -> Response:
        refused = self._versioned(params, EVENTS_VERSIONS)
        if refused is not None:
            return refused
        return _json(200, self.events.document(params["api-version"]))

    def _identity(self, method: str, path: str, query: str, headers: Mapping[str, str]) -> Response:
        if "x-forwarded-for" in headers:
            return _identity_error(400, IDENTITY_FORWARDED)
        if headers.get("metadata") != "true":
            return _identity_error(400, IDENTITY_METADATA)
        params = _query(query)
        if params is None:
            return _identity_error(400, IDENTITY_DUPLICATE)
        route = path.rstrip("/")
        if route not in ("/metadata/identity/oauth2/token", "/metadata/identity/info"):
            return _identity_error(404, ("not_found", NOT_FOUND))
        if method != "GET":
            return _identity_error(405, ("method_not_allowed", METHOD), (("Allow", "GET"),))
        version = params.get("api-version")
        if version is None:
            return _identity_error(400, IDENTITY_NO_VERSION)
        if version not in IDENTITY_VERSIONS:
            return _identity_error(400, IDENTITY_BAD_VERSION)
        if route == "/metadata/identity/info":
            return _json(200, {"tenantId": self.tokens.tenant_id}, request_id=False)
        selectors = [params.get(k) for k in ("client_id", "object_id", "msi_res_id")]
        if sum(s is not None for s in selectors) > 1:
            return _identity_error(400, IDENTITY_TWO_IDS)
        resource = params.get("resource")
        if not resource:
            return _identity_error(400, IDENTITY_NO_RESOURCE)
        chosen = self.tokens.find(*selectors)
        if chosen is None:
            return _identity_error(400, IDENTITY_NOT_FOUND)
        fresh = params.get("bypass_cache") == "true"
        return _json(200, self.tokens.token(chosen, resource, fresh=fresh), request_id=False)


def _query(query: str) -> dict[str, str] | None:
    """Query parameters by name; None when a name appears twice (IMDS rejects that)."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in params:
            return None
        params[name] = value
    return params


def _versioned(params: Mapping[str, str], versions: tuple[str, ...]) -> Response | None:
    """None if ``api-version`` is one of ``versions``; else the 400 naming the newest."""
    if params.get("api-version") in versions:
        return None
    return _json(400, {"error": API_VERSION, "newest-versions": list(reversed(versions[-3:]))})


def _only_get(method: str) -> Response | None:
    if method == "GET":
        return None
    return _error(405, METHOD, (("Allow", "GET"),))


def _json(
    status: int,
    value: object,
    extra: tuple[tuple[str, str], ...] = (),
    *,
    request_id: bool = True,
) -> Response:
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    headers = (_request_id() if request_id else ()) + extra
    return Response(status, body, JSON_TYPE, headers)


def _error(status: int, message: str, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    return _json(status, {"error": message}, extra)


def _identity_error(
    status: int, error: tuple[str, str], extra: tuple[tuple[str, str], ...] = ()
) -> Response:
    code, description = error
    body = {"error": code, "error_description": description}
    return _json(status, body, extra, request_id=False)


def _request_id() -> tuple[tuple[str, str], ...]:
    return (("x-ms-request-id", new_request_id()),)
