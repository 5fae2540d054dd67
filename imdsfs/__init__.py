"""imdsfs: the EC2 Instance Metadata Service mounted as plain files."""

from __future__ import annotations

from ._errors import (
    ConfigError,
    DeadlineExceeded,
    Forbidden,
    ImdsError,
    NotFound,
    ResponseTooLarge,
    Throttled,
    TokenError,
    Unavailable,
)

__version__ = "0.1.0"

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
    "__version__",
]
