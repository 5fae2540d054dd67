"""How long each IMDS value may be served from the cache.

IMDS values differ wildly in volatility: the instance id never changes while the instance runs,
spot interruption notices and rotated credentials appear within seconds. One TTL for everything
is either stale or wasteful, so the TTL is chosen per path by rules.

Rules match **mount paths**, the paths a user sees under the mountpoint: ``instance-id``,
``spot/instance-action``, ``dynamic/instance-identity/document``, ``user-data``. Patterns are
split on ``/`` and matched segment by segment:

- ``*``, ``?`` and ``[...]`` match within one segment (:func:`fnmatch.fnmatchcase`, so
  case-sensitive); they never cross a ``/``.
- ``**`` as a whole segment matches zero or more segments: ``spot/**`` matches ``spot``
  itself and everything below it, ``**`` matches every path.
- A pattern ending in ``/`` matches directory listings only: ``**/`` is every listing and
  ``/`` alone is the root listing. Other patterns match files and listings alike.
- A leading ``/`` is ignored: mount paths are relative to the mountpoint.

User rules are tried first, in the order given, then the built-in rules (``describe()`` prints
both); a path that matches nothing gets the default TTL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cached_property

from ._errors import ConfigError

__all__ = ["TtlPolicy", "TtlRule"]

_HOUR = 3600.0
_LONG = 6 * _HOUR  # fixed for the life of the instance
_MINUTES = 60.0  # changes through the EC2 API while the instance runs
_SECONDS = 5.0  # changes on its own, and someone may be waiting for it (spot, credentials)

DEFAULT_TTL = 60.0
NEGATIVE_TTL = 2.0


@dataclass(frozen=True)
class TtlRule:
    """One ``PATTERN=SECONDS`` rule; see the module docstring for the pattern language."""

    pattern: str
    seconds: float

    def __post_init__(self) -> None:
        if not self.pattern:
            raise ConfigError("TTL rule has an empty pattern")
        if "//" in self.pattern.strip("/"):
            raise ConfigError(f"TTL rule pattern {self.pattern!r} has an empty segment")
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ConfigError(f"TTL for {self.pattern!r} must be a finite number >= 0")

    @property
    def listings_only(self) -> bool:
        return self.pattern.endswith("/")

    @cached_property
    def segments(self) -> tuple[str, ...]:
        body = self.pattern.strip("/")
        return tuple(body.split("/")) if body else ()

    def matches(self, segments: tuple[str, ...], *, listing: bool) -> bool:
        if self.listings_only and not listing:
            return False
        return _match(self.segments, segments)


def _match(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    if not pattern:
        return not segments
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, segments[i:]) for i in range(len(segments) + 1))
    return bool(segments) and fnmatchcase(segments[0], head) and _match(rest, segments[1:])


def _rules(seconds: float, *patterns: str) -> list[TtlRule]:
    return [TtlRule(pattern, seconds) for pattern in patterns]


# First match wins. Listings come first: their entries appear and disappear (spot notices,
# tags, credentials, network interfaces) even where the leaves below them are stable.
BUILTIN_RULES: Sequence[TtlRule] = (
    *_rules(_SECONDS, "**/"),
    *_rules(
        _LONG,
        "instance-id",
        "ami-id",
        "ami-launch-index",
        "ami-manifest-path",
        "ancestor-ami-ids",
        "instance-type",
        "instance-life-cycle",
        "kernel-id",
        "ramdisk-id",
        "product-codes",
        "reservation-id",
        "mac",
        "placement/**",
        "services/**",
        "dynamic/instance-identity/**",
    ),
    *_rules(_MINUTES, "network/**", "tags/**"),
    *_rules(
        _SECONDS,
        "iam/**",
        "identity-credentials/**",
        "spot/**",
        "events/**",
        "autoscaling/**",
    ),
)


class TtlPolicy:
    """Chooses the cache TTL of an IMDS path: user rules first, then the built-in table."""

    def __init__(
        self,
        rules: Iterable[TtlRule] = (),
        *,
        default_ttl: float = DEFAULT_TTL,
        negative_ttl: float = NEGATIVE_TTL,
    ) -> None:
        for name, value in (("default", default_ttl), ("negative", negative_ttl)):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} TTL must be a finite number >= 0, not {value!r}")
        self._rules = (*rules, *BUILTIN_RULES)
        self.default_ttl = default_ttl
        self.negative_ttl = negative_ttl

    @classmethod
    def from_rules(cls, rules: Iterable[str]) -> TtlPolicy:
        """Parse ``PATTERN=SECONDS`` rules; ``default=S`` and ``negative=S`` set those TTLs.

        The split is on the last ``=``: tag keys, and so mount paths, may contain ``=``.
        """
        parsed: list[TtlRule] = []
        special: dict[str, float] = {}
        for rule in rules:
            pattern, sep, value = rule.rpartition("=")
            pattern = pattern.strip()
            if not sep or not pattern:
                raise ConfigError(f"TTL rule {rule!r} is not PATTERN=SECONDS")
            try:
                seconds = float(value)
            except ValueError:
                raise ConfigError(f"TTL rule {rule!r}: {value!r} is not a number") from None
            if pattern in ("default", "negative"):
                special[pattern] = seconds
            else:
                parsed.append(TtlRule(pattern, seconds))
        return cls(
            parsed,
            default_ttl=special.get("default", DEFAULT_TTL),
            negative_ttl=special.get("negative", NEGATIVE_TTL),
        )

    def ttl(self, imds_path: str) -> float:
        """TTL for a path relative to ``/latest/`` (``meta-data/instance-id``, ``user-data``).

        A path ending in ``/`` (and the ``/latest/`` listing itself, ``""``) is a listing.
        """
        listing = imds_path == "" or imds_path.endswith("/")
        segments = mount_segments(imds_path)
        for rule in self._rules:
            if rule.matches(segments, listing=listing):
                return rule.seconds
        return self.default_ttl

    def describe(self) -> list[tuple[str, float]]:
        """Every rule in the order it is tried, then ``default`` and ``negative``.

        Feeding the result back as ``PATTERN=SECONDS`` rules gives an equivalent policy.
        """
        return [
            *((rule.pattern, rule.seconds) for rule in self._rules),
            ("default", self.default_ttl),
            ("negative", self.negative_ttl),
        ]


def mount_segments(imds_path: str) -> tuple[str, ...]:
    """``meta-data/placement/region`` → ``("placement", "region")``; other roots are kept."""
    if imds_path == "meta-data" or imds_path.startswith("meta-data/"):
        imds_path = imds_path.removeprefix("meta-data")
    body = imds_path.strip("/")
    return tuple(body.split("/")) if body else ()
