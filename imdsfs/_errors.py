"""The one exception hierarchy of imdsfs.

Everything imdsfs raises on purpose is an `ImdsfsError`. Two kinds matter, and are kept
apart because they are handled apart::

    ImdsfsError
    ├── ImdsError             the metadata service failed or refused: mapped to an errno at the
    │   │                     FUSE boundary (`_fs._errno_for`), an exit status in `dump`
    │   ├── NotFound            404: the path does not exist (an answer, not a failure)
    │   ├── Forbidden           403, or 401 that fresh credentials did not cure
    │   ├── Throttled           429/503 still returned after the retries
    │   ├── Unavailable         5xx, connection errors, timeouts after the retries
    │   │   └── DeadlineExceeded  the operation's deadline ran out
    │   ├── TokenError          no IMDSv2 token (or other credential) could be obtained
    │   └── ResponseTooLarge    a body over the configured bound
    └── UsageError            the user asked for something that cannot be: exit status 2 or 1
        ├── ConfigError         a bad option, TTL rule, endpoint or path, found before any I/O
        ├── MountError          the mount could not be set up
        └── DocumentError       an unusable instance document (a snapshot, the emulator's)

A `UsageError` is never an `ImdsError`: a configuration mistake must not turn into a silent
EIO at request time. Foreign exceptions (httpx's, h11's) are mapped to these once, where they
are raised (`_transport`).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeadlineExceeded",
    "DocumentError",
    "Forbidden",
    "ImdsError",
    "ImdsfsError",
    "MountError",
    "NotFound",
    "ResponseTooLarge",
    "Throttled",
    "TokenError",
    "Unavailable",
    "UsageError",
]


class ImdsfsError(Exception):
    """Base class of everything imdsfs raises on purpose."""


class ImdsError(ImdsfsError):
    """The metadata service failed, or answered that the path cannot be read."""


class NotFound(ImdsError):
    """The service answered 404: the path does not exist now (it may appear later)."""


class Forbidden(ImdsError):
    """The service refused the request (403, or 401 even with fresh credentials)."""


class Throttled(ImdsError):
    """The service kept answering 429 or 503 until the retries or the deadline ran out."""


class Unavailable(ImdsError):
    """The service could not be reached or kept failing (5xx, resets, timeouts)."""


class DeadlineExceeded(Unavailable):
    """The operation, retries included, did not finish within its deadline."""


class TokenError(ImdsError):
    """No credential for the service (EC2's IMDSv2 token) could be obtained; the message
    says what the user can do."""


class ResponseTooLarge(ImdsError):
    """A response body exceeded the configured size bound and was refused."""


class UsageError(ImdsfsError):
    """Something the user asked for cannot be done; the message is one line to act on."""


class ConfigError(UsageError):
    """A configuration value (option, endpoint, TTL rule, path) is invalid."""


class MountError(UsageError):
    """The mount could not be set up."""


class DocumentError(UsageError, ValueError):
    """The instance document is unusable; the message names the place (a JSON Pointer)."""
