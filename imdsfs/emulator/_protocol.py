"""IMDS request rules: which status, headers and body a request gets.

Pure decisions, no sockets: the server parses a request, asks ``ImdsService.answer`` and
writes what it returns. The order of the checks is the order IMDS applies them: endpoint
turned off, then ``X-Forwarded-For``, then the token endpoint, then the method, then the
token, and only then the path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.utils import formatdate
from typing import Literal
from urllib.parse import urlsplit

from .._document import VERSIONS
from ._instance import LiveInstance
from ._response import Response, plain_envelope
from ._state import TOKEN_PATH, Counters, TokenStore

__all__ = ["ImdsService", "Response", "TokenMode"]

TokenMode = Literal["required", "optional"]

TOKEN_HEADER = "x-aws-ec2-metadata-token"
TTL_REQUEST_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
TTL_RESPONSE_HEADER = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
MAX_TOKEN_TTL = 21600

# The 339-byte page real IMDS sends with a 404 (seen in captures): the DTD line starts with
# two TABs and a space, and the page ends with a newline.
NOT_FOUND_PAGE = (
    b'<?xml version="1.0" encoding="iso-8859-1"?>\n'
    b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
    b'\t\t "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
    b'<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
    b" <head>\n"
    b"  <title>404 - Not Found</title>\n"
    b" </head>\n"
    b" <body>\n"
    b"  <h1>404 - Not Found</h1>\n"
    b" </body>\n"
    b"</html>\n"
)

_TTL_VALUE = re.compile(r"[0-9]+")


class ImdsService:
    """The IMDS behaviour of one emulated instance; its attributes may change at run time."""

    server_name = "EC2ws"

    def __init__(
        self,
        instance: LiveInstance,
        tokens: TokenStore,
        counters: Counters,
        *,
        token_mode: TokenMode,
        enabled: bool,
    ) -> None:
        self.instance = instance
        self.tokens = tokens
        self.counters = counters
        self.token_mode: TokenMode = token_mode
        self.enabled = enabled
        self.hop_limit_exceeded = False
        self.token_ttl_header = True  # False: a broken IMDS that omits the granted TTL
        # Canned answers by request path, served whatever the request: hostile-IMDS tests.
        self.overrides: dict[str, Response] = {}
        # Real IMDS sends one Last-Modified for every leaf (boot or refresh time).
        self.last_modified = formatdate(usegmt=True)

    def answer(self, method: str, target: str, headers: Mapping[str, str]) -> Response | None:
        """The response to a request, or None for no response at all (hop limit exceeded).

        ``target`` is the request target; IMDS ignores its query string. ``headers`` maps
        lower-case header names to values.
        """
        path = urlsplit(target).path
        override = self.overrides.get(path)
        if override is not None:
            return override
        if not self.enabled or "x-forwarded-for" in headers:
            return Response(403)
        if path == TOKEN_PATH:
            return self._token_endpoint(method, headers)
        if method == "PUT" and _is_misplaced_token_path(path):
            return Response(403)  # "This behavior is intended" (the EC2 User Guide)
        if method not in ("GET", "HEAD"):
            return Response(405, headers=(("Allow", "GET, HEAD"),))
        remaining = self._check_token(headers)
        if remaining == "refused":
            return Response(401)
        body = self._read(path)
        if body is None:
            return Response(404, NOT_FOUND_PAGE, "text/html")
        extra = [("Accept-Ranges", "none"), ("Last-Modified", self.last_modified)]
        if remaining is not None:
            extra.append((TTL_RESPONSE_HEADER, str(remaining)))
        content_type = "application/octet-stream" if _is_user_data(path) else "text/plain"
        return Response(200, body, content_type, tuple(extra))

    def envelope(self, response: Response, date: str) -> list[tuple[str, str]]:
        return plain_envelope(response, date, self.server_name)

    def _token_endpoint(self, method: str, headers: Mapping[str, str]) -> Response | None:
        if method != "PUT":
            return Response(405, headers=(("Allow", "PUT"),))
        ttl = _parse_ttl(headers.get(TTL_REQUEST_HEADER))
        if ttl is None:
            return Response(400)
        if self.hop_limit_exceeded:
            return None  # the answer would die in transit: the client just waits
        token = self.tokens.issue(ttl)
        self.counters.token_issued()
        granted = ((TTL_RESPONSE_HEADER, str(ttl)),) if self.token_ttl_header else ()
        return Response(200, token.encode(), headers=granted)

    def _check_token(self, headers: Mapping[str, str]) -> int | Literal["refused"] | None:
        """Remaining TTL of the request's token; None if it carries none and may go without."""
        token = headers.get(TOKEN_HEADER)
        if token is None:
            # A request without a token is IMDSv1, refused when tokens are required.
            return "refused" if self.token_mode == "required" else None
        # A token header makes it IMDSv2: a bad token is refused even when v1 is allowed.
        remaining = self.tokens.remaining(token)
        return "refused" if remaining is None else remaining

    def _read(self, path: str) -> bytes | None:
        if path == "/":
            return "\n".join(VERSIONS).encode()
        version, _, rest = path[1:].partition("/")
        if version not in VERSIONS:
            return None
        return self.instance.read(rest)


def _parse_ttl(value: str | None) -> int | None:
    if value is None or not _TTL_VALUE.fullmatch(value.strip()):
        return None
    ttl = int(value)
    return ttl if 1 <= ttl <= MAX_TOKEN_TTL else None


def _is_misplaced_token_path(path: str) -> bool:
    """``/<version>/api/token``, ``/latest/api/token/`` and the like."""
    return path.strip("/").split("/")[1:3] == ["api", "token"]


def _is_user_data(path: str) -> bool:
    return path.strip("/").split("/")[1:] == ["user-data"]
