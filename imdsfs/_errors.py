"""The one exception hierarchy of imdsfs.

Every failure that crosses a layer boundary is one of these, so the filesystem maps
them to errno in exactly one place::

    ImdsError
    ├── NotFound            404: the path does not exist (an answer, not a failure)
    ├── Forbidden           403, or 401 that a fresh token did not cure
    ├── Throttled           429/503 still returned after the retries
    ├── Unavailable         5xx, connection errors, timeouts after the retries
    │   └── DeadlineExceeded  the per-call deadline ran out
    ├── TokenError          the IMDSv2 token could not be obtained (400, hop limit, ...)
    ├── ResponseTooLarge    a body over the configured bound
    └── ConfigError         a bad endpoint, TTL rule or option, found before any I/O
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeadlineExceeded",
    "Forbidden",
    "ImdsError",
    "NotFound",
    "ResponseTooLarge",
    "Throttled",
    "TokenError",
    "Unavailable",
]


class ImdsError(Exception):
    """Base class: something went wrong talking to, or configuring access to, IMDS."""


class NotFound(ImdsError):
    """IMDS answered 404: the path does not exist now (it may appear later)."""


class Forbidden(ImdsError):
    """IMDS refused the request (403, or 401 even with a freshly issued token)."""


class Throttled(ImdsError):
    """IMDS kept answering 429 or 503 until the retries or the deadline ran out."""


class Unavailable(ImdsError):
    """IMDS could not be reached or kept failing (5xx, resets, timeouts)."""


class DeadlineExceeded(Unavailable):
    """The whole call, retries included, did not finish within its deadline."""


class TokenError(ImdsError):
    """No IMDSv2 token could be obtained; the message says what the user can do."""


class ResponseTooLarge(ImdsError):
    """A response body exceeded the configured size bound and was refused."""


class ConfigError(ImdsError):
    """A configuration value (endpoint, TTL rule, option) is invalid."""
