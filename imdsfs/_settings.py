"""What shapes how imdsfs talks to a metadata service: one validated settings object.

`ClientConfig` holds the flags of ``mount`` and ``dump``: which provider and where, how the
HTTP client behaves, and the few provider options (EC2's token TTL and IMDSv1 fallback).
Values are checked on construction, so a bad one fails before any I/O, as a `ConfigError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._errors import ConfigError

__all__ = ["MAX_TOKEN_TTL", "ClientConfig"]

MAX_TOKEN_TTL = 21600


@dataclass(frozen=True)
class ClientConfig:
    """Everything that shapes how the client talks to the metadata service."""

    provider: str = "ec2"
    endpoint: str | None = None  # flag value; None: the provider's environment, then default
    endpoint_mode: str | None = None  # EC2: "IPv4" | "IPv6"; None: environment, then IPv4
    token_ttl: int = MAX_TOKEN_TTL  # EC2: lifetime asked for each IMDSv2 token
    allow_imdsv1: bool = False  # EC2: and only if AWS_EC2_METADATA_V1_DISABLED is not true
    connect_timeout: float = 1.0
    read_timeout: float = 1.0  # per attempt; IMDS answers in milliseconds, the AWS SDKs wait 1 s
    # Seconds one get() (retries and credentials included) may take when its caller set no
    # deadline: the length of a background fetch, and of one credential request.
    timeout: float = 5.0
    max_attempts: int = 4
    backoff_base: float = 0.05
    backoff_max: float = 1.0
    max_body: int = 1 << 20
    max_concurrency: int = 8  # requests in flight at once, credential requests included
    # After a credential failure, fail at once for this long rather than wait on another
    # unanswered request (EC2's hop limit) on every read.
    token_retry_after: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.token_ttl <= MAX_TOKEN_TTL:
            raise ConfigError(f"token_ttl must be 1..{MAX_TOKEN_TTL} seconds")
        for name in ("connect_timeout", "read_timeout", "timeout", "token_retry_after"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of seconds")
        for name in ("backoff_base", "backoff_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a number of seconds >= 0")
        for name in ("max_attempts", "max_body", "max_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
