"""imdsfs: a cloud instance's metadata service mounted as plain files."""

from __future__ import annotations

from ._cache import CachedValue, MetadataCache
from ._client import ImdsClient, ImdsResponse
from ._errors import (
    ConfigError,
    DeadlineExceeded,
    DocumentError,
    Forbidden,
    ImdsError,
    ImdsfsError,
    MountError,
    NotFound,
    ResponseTooLarge,
    Throttled,
    TokenError,
    Unavailable,
    UsageError,
)
from ._provider import Provider
from ._settings import ClientConfig
from ._tree import MetadataTree
from ._ttl import TtlPolicy
from .providers.ec2 import Ec2Provider, TokenManager, resolve_endpoint

__version__ = "0.1.0"

__all__ = [
    "CachedValue",
    "ClientConfig",
    "ConfigError",
    "DeadlineExceeded",
    "DocumentError",
    "Ec2Provider",
    "Forbidden",
    "ImdsClient",
    "ImdsError",
    "ImdsResponse",
    "ImdsfsError",
    "MetadataCache",
    "MetadataTree",
    "MountError",
    "NotFound",
    "Provider",
    "ResponseTooLarge",
    "Throttled",
    "TokenError",
    "TokenManager",
    "TtlPolicy",
    "Unavailable",
    "UsageError",
    "__version__",
    "resolve_endpoint",
]
