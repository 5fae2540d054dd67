"""GCE metadata server request rules: which status, headers and body a request gets.

Pure decisions over a ``LiveGce``, no sockets; long-polls come back as a ``Hold`` for the
server to wait on. Checks in order: ``Metadata-Flavor: Google`` (else 403 with Google's HTML
page), ``X-Forwarded-For`` (403), the method (405), then the path and its query.

Bodies and headers follow real captures (CLOUDS.md §6 and the README's GCE section): the
404 page of a 2025 capture is reproduced to the byte (1604 bytes for its URL) and the 403 of
a 2023 capture likewise (1649). Where nothing public settled a detail, the choice is marked
"decided" in a comment here and listed in the README.
"""

from __future__ import annotations

import hashlib
import html
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from ._gce_document import GceDocument, GceNode
from ._gce_live import LiveGce
from ._response import Hold, Response, content_length
from ._state import Counters

__all__ = ["GceService", "default_form", "etag"]

SERVER_NAME = "Metadata Server for VM"
METADATA_ROOT = "/computeMetadata/v1/"
TEXT = "application/text"
JSON = "application/json"
HTML = "text/html; charset=UTF-8"
_TRUE = ("true", "True", "1")  # recursive=True is what cloud-init sends

# Google's error page (GFE's), as the metadata server sends it for 403, 404 and the like.
_STYLE = (
    "*{margin:0;padding:0}html,code{font:15px/22px arial,sans-serif}html{background:#fff;"
    "color:#222;padding:15px}body{margin:7% auto 0;max-width:390px;min-height:180px;"
    "padding:30px 0 15px}* > body{background:url(//www.google.com/images/errors/robot.png) "
    "100% 5px no-repeat;padding-right:205px}p{margin:11px 0 22px;overflow:hidden}"
    "ins{color:#777;text-decoration:none}a img{border:0}@media screen and (max-width:772px)"
    "{body{background:none;margin-top:0;max-width:none;padding-right:0}}#logo{background:"
    "url(//www.google.com/images/branding/googlelogo/1x/googlelogo_color_150x54dp.png) "
    "no-repeat;margin-left:-5px}@media only screen and (min-resolution:192dpi){#logo{"
    "background:url(//www.google.com/images/branding/googlelogo/2x/googlelogo_color_150x54dp"
    ".png) no-repeat 0% 0%/100% 100%;-moz-border-image:url(//www.google.com/images/branding/"
    "googlelogo/2x/googlelogo_color_150x54dp.png) 0}}@media only screen and "
    "(-webkit-min-device-pixel-ratio:2){#logo{background:url(//www.google.com/images/branding"
    "/googlelogo/2x/googlelogo_color_150x54dp.png) no-repeat;-webkit-background-size:100% "
    "100%}}#logo{display:inline-block;height:54px;width:150px}"
)
_ALL_WE_KNOW = "<ins>That\u2019s all we know.</ins>"


def error_page(status: int, reason: str, message: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n"
        '  <meta name=viewport content="initial-scale=1, minimum-scale=1, width=device-width">\n'
        f"  <title>Error {status} ({reason})!!1</title>\n  <style>\n    {_STYLE}\n  </style>\n"
        "  <a href=//www.google.com/><span id=logo aria-label=Google></span></a>\n"
        f"  <p><b>{status}.</b> <ins>That\u2019s an error.</ins>\n  <p>{message}\n"
    ).encode()


def not_found(target: str) -> Response:
    url = html.escape(target, quote=False)  # decided: the URL as asked, query included
    message = f"The requested URL <code>{url}</code> was not found on this server.  {_ALL_WE_KNOW}"
    return Response(404, error_page(404, "Not Found", message), HTML)


def forbidden(target: str, why: str = "") -> Response:
    url = html.escape(target, quote=False)
    reason = f" {why} " if why else "  "
    message = (
        f"Your client does not have permission to get URL <code>{url}</code> from this "
        f"server.{reason}{_ALL_WE_KNOW}"
    )
    return Response(403, error_page(403, "Forbidden", message), HTML)


def etag(body: bytes) -> str:
    """16 hex digits, a function of the bytes alone (decided: GCE's algorithm is not public;
    the same value always gets the same ETag, as in GCE)."""
    return hashlib.sha256(body).hexdigest()[:16]


@dataclass(frozen=True)
class _Query:
    recursive: bool
    alt: str | None
    wait: bool
    last_etag: str | None
    timeout: int | None
    audience: str
    full: bool
    licenses: bool

    @classmethod
    def parse(cls, query: str) -> _Query | Response:
        values = parse_qs(query, keep_blank_values=True)

        def first(name: str) -> str | None:
            return values[name][0] if name in values else None

        timeout = first("timeout_sec")
        if timeout is not None and not timeout.isdigit():  # decided: a plain 400
            return Response(400, b"timeout_sec must be a whole number of seconds\n", TEXT)
        return cls(
            recursive=first("recursive") in _TRUE,
            alt=first("alt"),
            wait=first("wait_for_change") in _TRUE,
            last_etag=first("last_etag"),
            timeout=None if timeout is None else int(timeout),
            audience=first("audience") or "",
            full=first("format") == "full",
            licenses=(first("licenses") or "").upper() == "TRUE",
        )


_DEFAULT = _Query(False, None, False, None, None, "", False, False)


class GceService:
    """The GCE metadata server of one emulated instance."""

    server_name = SERVER_NAME

    def __init__(self, live: LiveGce, counters: Counters, default_host: str) -> None:
        self.live = live
        self._counters = counters
        self.default_host = default_host  # for Location when a request has no Host header

    @property
    def counters(self) -> Counters:
        return self._counters

    def answer(
        self, method: str, target: str, headers: Mapping[str, str]
    ) -> Response | Hold | None:
        path, _, query = target.partition("?")
        if headers.get("metadata-flavor") != "Google":
            return forbidden(target, "Missing Metadata-Flavor:Google header.")
        if "x-forwarded-for" in headers:
            return forbidden(target)  # decided: the plain 403 page
        rel = unquote(path[len(METADATA_ROOT) :]) if path.startswith(METADATA_ROOT) else None
        if method not in ("GET", "HEAD") and not (method == "POST" and _is_minted(rel)):
            return _method_not_allowed(method, target)
        if path == "/":
            return Response(200, b"0.1/\ncomputeMetadata/\n", TEXT)  # as captured, no ETag
        if path == "/computeMetadata/":
            return Response(200, b"v1/\n", TEXT)
        if path in ("/computeMetadata", "/computeMetadata/v1"):
            return self._redirect(path, query, headers)
        if rel is None:
            return not_found(target)
        parsed = _Query.parse(query)
        if isinstance(parsed, Response):
            return parsed
        return self._metadata(rel, parsed, target, path, query, headers)

    def envelope(self, response: Response, date: str) -> list[tuple[str, str]]:
        """Header order of the captures: Metadata-Flavor first, the security headers last."""
        return [
            ("Metadata-Flavor", "Google"),
            *response.headers,
            ("Content-Type", response.content_type),
            ("Date", date),
            ("Server", SERVER_NAME),
            ("Connection", "close"),  # decided: one response per connection, as the 2023 403
            *content_length(response),
            ("X-XSS-Protection", "0"),
            ("X-Frame-Options", "SAMEORIGIN"),
        ]

    # -- /computeMetadata/v1/... ------------------------------------------------------------

    def _metadata(
        self,
        rel: str,
        query: _Query,
        target: str,
        path: str,
        raw_query: str,
        headers: Mapping[str, str],
    ) -> Response | Hold:
        stripped = rel.strip("/")
        segments = stripped.split("/") if stripped else []
        if "" in segments:
            return not_found(target)
        asked_directory = rel == "" or rel.endswith("/")
        node, _ = self.live.read(lambda tree: tree.find(segments))
        if node is None or (node.kind != "directory" and asked_directory):
            return not_found(target)
        if node.kind == "directory" and not asked_directory:
            return self._redirect(path, raw_query, headers)
        if node.kind == "token":
            body = self.live.access_token(node.account or "")
            return not_found(target) if body is None else _ok(body, JSON)
        if node.kind == "identity":
            return self._identity(node, query, target)
        first, generation = self.live.read(lambda tree: _render(tree, segments, query))
        if first is None or not query.wait:
            return not_found(target) if first is None else first
        return self._long_poll(first, generation, segments, query, target)

    def _long_poll(
        self, first: Response, generation: int, segments: list[str], query: _Query, target: str
    ) -> Response | Hold:
        """``wait_for_change``: at once if ``last_etag`` is not the current ETag (``NONE``
        never is); else when the value changes, or after ``timeout_sec`` with the unchanged
        value. Without ``last_etag`` it waits for the next change (decided, as the docs'
        first example reads)."""
        current = dict(first.headers)["ETag"]
        if query.last_etag is not None and query.last_etag != current:
            return first
        if query.timeout == 0:
            return first
        seen = generation
        deadline = None if query.timeout is None else time.monotonic() + query.timeout

        def render() -> Response:
            response, _ = self.live.read(lambda tree: _render(tree, segments, query))
            return not_found(target) if response is None else response

        def poll(seconds: float) -> Response | None:
            nonlocal seen
            now = self.live.wait(seen, seconds)
            if now == seen:
                return None
            seen = now
            response = render()
            changed = response.status != 200 or dict(response.headers)["ETag"] != current
            return response if changed else None  # a change elsewhere in the tree

        return Hold(deadline, poll, render)

    def _identity(self, node: GceNode, query: _Query, target: str) -> Response:
        if not query.audience:
            # As GCE (and GKE's metadata server) answers; decided: Go's plain-text error type.
            body = b"non-empty audience parameter required\n"
            return Response(400, body, "text/plain; charset=utf-8")
        token = self.live.identity(node.account or "", query.audience, query.full, query.licenses)
        return not_found(target) if token is None else _ok(token, TEXT)

    def _redirect(self, path: str, query: str, headers: Mapping[str, str]) -> Response:
        """301 to the directory's slash form: absolute Location, query kept; the body is the
        new path and a newline, served as text/html (2019 capture)."""
        host = headers.get("host") or self.default_host
        target = path + "/" + (f"?{query}" if query else "")
        location = f"http://{host}{target}"
        return Response(301, (target + "\n").encode(), "text/html", (("Location", location),))


def default_form(tree: GceDocument, segments: list[str]) -> Response | None:
    """A plain GET's 200 answer for a leaf or directory now, or None."""
    return _render(tree, segments, _DEFAULT)


def _render(tree: GceDocument, segments: list[str], query: _Query) -> Response | None:
    """The 200 answer for a leaf or directory now (with its ETag), or None if it is gone."""
    node = tree.find(segments)
    if node is None or node.kind not in ("directory", "leaf"):
        return None
    if node.kind == "directory":
        if query.recursive and query.alt == "text":
            return _ok(tree.as_text(node), TEXT)
        if query.recursive:
            return _ok(tree.as_json(node), JSON)
        if query.alt == "json":  # decided: the listing as a JSON array
            return _ok(tree.listing_json(node), JSON)
        return _ok(tree.listing(node), TEXT)
    if query.alt == "json":
        return _ok(tree.as_json(node), JSON)
    body, is_json = tree.text(node)
    if query.alt == "text" and is_json:
        return _ok(b"".join(item.encode() + b"\n" for item in _strings(node)), TEXT)
    return _ok(body, JSON if is_json else TEXT)


def _strings(node: GceNode) -> list[str]:
    return [str(item) for item in node.value] if isinstance(node.value, list) else []


def _ok(body: bytes, content_type: str) -> Response:
    return Response(200, body, content_type, (("ETag", etag(body)),))


def _is_minted(rel: str | None) -> bool:
    """token and identity also take POST (google-auth asks for a bound token that way)."""
    return rel is not None and rel.rstrip("/").rsplit("/", 1)[-1] in ("token", "identity")


def _method_not_allowed(method: str, target: str) -> Response:
    url = html.escape(target, quote=False)
    message = (
        f"The request method <code>{html.escape(method)}</code> is inappropriate for the URL "
        f"<code>{url}</code>.  {_ALL_WE_KNOW}"
    )
    page = error_page(405, "Method Not Allowed", message)
    return Response(405, page, HTML, (("Allow", "GET, HEAD"),))  # decided: GFE's 405 page
