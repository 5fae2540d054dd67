"""Nova's metadata service on the wire, as a guest sees it through Neutron's proxy.

A guest's request reaches Nova through Neutron's metadata proxy, which forwards the method,
path and query, passes a 200 on with Nova's ``Content-Type`` and body, and replaces every
error with a bare webob exception of its own (``neutron/agent/metadata/proxy_base.py``).
So: ``/`` lists the EC2 versions; Nova ignores the method, so ``PUT /latest/api/token`` is
a 404 like any unknown path (Nova has no IMDSv2) while ``PUT`` on a real path answers as a
``GET`` does; only ``password`` looks at the method (``GET``; anything else a 400; setting it
with ``POST`` is not emulated, as the server does not hand bodies to the rules); the query
string is ignored.

Error bodies are webob's, chosen by the request's ``Accept`` header like webob's
``generate_response`` (no header: plain text; ``*/*``, as curl, httpx and requests send: the
HTML page; ``application/json``: JSON). A Nova exception (a path one segment below a leaf)
is Neutron's 500 "Remote metadata server experienced an internal server error.". Text
bodies are ``text/plain; charset=UTF-8`` (webob adds the charset), JSON documents
``application/json``. No ``Server`` header (Neutron's proxy sends none); X-Forwarded-For from
the guest is not modelled (Neutron's haproxy sets its own).
"""

from __future__ import annotations

import html
import json
import posixpath
from collections.abc import Mapping
from urllib.parse import unquote

from ._openstack_instance import (
    EC2_VERSIONS,
    NovaNotFound,
    NovaServerError,
    OpenStackInstance,
)
from ._response import Response, plain_envelope
from ._state import Counters

__all__ = ["NovaService", "webob_error"]

_TITLES = {400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
_EXPLANATIONS = {
    400: "The server could not comply with the request since it is either malformed or "
    "otherwise incorrect.",
    404: "The resource could not be found.",
    500: "Remote metadata server experienced an internal server error.",
}


class NovaService:
    """Nova (behind Neutron) for one instance; its attributes may change at run time."""

    server_name = ""  # Neutron's proxy sends none

    def __init__(self, instance: OpenStackInstance, counters: Counters) -> None:
        self.instance = instance
        self.counters = counters
        self.overrides: dict[str, Response] = {}

    def envelope(self, response: Response, date: str) -> list[tuple[str, str]]:
        return plain_envelope(response, date, self.server_name)

    def answer(self, method: str, target: str, headers: Mapping[str, str]) -> Response | None:
        path = target.partition("?")[0]  # Nova ignores the query
        override = self.overrides.get(path)
        if override is not None:
            return override
        path = unquote(path)
        accept = headers.get("accept", "")
        if posixpath.normpath(path) == "/":
            return _ok("\n".join([*EC2_VERSIONS, "latest"]).encode(), "text/plain")
        try:
            found = self.instance.lookup(path)
        except NovaNotFound:
            return webob_error(404, accept)
        except NovaServerError:
            return webob_error(500, accept)
        if found.password and method != "GET":
            return webob_error(400, accept)  # "GET and POST only are supported."
        return _ok(found.body, found.mimetype)


def _ok(body: bytes, mimetype: str) -> Response:
    return Response(200, body, _with_charset(mimetype))


def _with_charset(mimetype: str) -> str:
    """webob adds its default charset to text types only."""
    return f"{mimetype}; charset=UTF-8" if mimetype.startswith("text/") else mimetype


def webob_error(status: int, accept: str) -> Response:
    """The body webob's exception for ``status`` sends, negotiated on ``accept``."""
    title, explanation = _TITLES[status], _EXPLANATIONS[status]
    line = f"{status} {title}"
    kind = _negotiate(accept)
    if kind == "text/html":
        page = (
            f"<html>\n <head>\n  <title>{line}</title>\n </head>\n <body>\n"
            f"  <h1>{line}</h1>\n  {html.escape(explanation)}<br /><br />\n\n\n\n"
            " </body>\n</html>"
        )
        return Response(status, page.encode(), _with_charset("text/html"))
    if kind == "application/json":
        message = {"message": f"{explanation}<br /><br />\n\n\n", "code": line, "title": title}
        return Response(status, json.dumps(message).encode(), "application/json")
    return Response(status, f"{line}\n\n{explanation}\n\n   ".encode(), _with_charset("text/plain"))


def _negotiate(accept: str) -> str | None:
    """webob's choice between ``text/html`` and ``application/json`` (None: plain text).

    Each offer takes the quality of the most specific range that matches it; the best
    quality wins, ties go to the first offer. No header, or one that matches neither, gives
    plain text; a header webob cannot parse accepts everything (HTML).
    """
    if not accept.strip():
        return None
    ranges: list[tuple[str, str, float]] = []
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        kind, slash, subtype = media.partition("/")
        if not slash or not kind or not subtype:
            return "text/html"  # invalid: webob's AcceptInvalidHeader offers everything
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    return "text/html"
        ranges.append((kind.lower(), subtype.lower(), quality))
    best: tuple[float, int, str] | None = None
    for order, offer in enumerate(("text/html", "application/json")):
        offer_kind, offer_subtype = offer.split("/")
        matches = [
            (2 if k == offer_kind and s == offer_subtype else 1 if k == offer_kind else 0, q)
            for k, s, q in ranges
            if (k, s) in ((offer_kind, offer_subtype), (offer_kind, "*"), ("*", "*"))
        ]
        if not matches:
            continue
        quality = max(matches)[1]
        if quality > 0 and (best is None or (-quality, order) < (best[0], best[1])):
            best = (-quality, order, offer)
    return best[2] if best is not None else None
