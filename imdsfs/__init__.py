"""imdsfs: the EC2 Instance Metadata Service mounted as plain files."""

from __future__ import annotations

from ._cache import CachedValue, MetadataCache
from ._client import ClientConfig, ImdsClient, ImdsResponse, TokenManager, resolve_endpoint
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
from ._tree import MetadataTree
from ._ttl import TtlPolicy

__version__ = "0.1.0"

__all__ = [
    "CachedValue",
    "ClientConfig",
    "ConfigError",
    "DeadlineExceeded",
    "Forbidden",
    "ImdsClient",
    "ImdsError",
    "ImdsResponse",
    "MetadataCache",
    "MetadataTree",
    "NotFound",
    "ResponseTooLarge",
    "Throttled",
    "TokenError",
    "TokenManager",
    "TtlPolicy",
    "Unavailable",
    "__version__",
    "resolve_endpoint",
]
