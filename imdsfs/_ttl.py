"""How long each value may be served from the cache: the TTL is chosen per path, by rules.

Metadata values differ wildly in volatility: an instance id never changes while the instance
runs, spot notices and rotated credentials appear within seconds. One TTL for everything is
either stale or wasteful.

Rules are ``PATTERN=SECONDS`` over mount paths, in the pattern language of `_paths`. The
user's rules are tried first, in the order given, then the provider's built-in rules
(``describe()`` prints both); a path that matches nothing gets the default TTL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ._errors import ConfigError
from ._paths import Pattern

__all__ = ["DEFAULT_TTL", "NEGATIVE_TTL", "TtlPolicy", "TtlRule", "rules"]

DEFAULT_TTL = 60.0
NEGATIVE_TTL = 2.0


@dataclass(frozen=True)
class TtlRule:
    """One ``PATTERN=SECONDS`` rule."""

    pattern: str
    seconds: float
    _compiled: Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            compiled = Pattern(self.pattern)
        except ConfigError as exc:
            raise ConfigError(f"TTL rule: {exc}") from None
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ConfigError(f"TTL for {self.pattern!r} must be a finite number >= 0")
        object.__setattr__(self, "_compiled", compiled)

    def matches(self, path: str) -> bool:
        return self._compiled.matches(path)


def rules(seconds: float, *patterns: str) -> list[TtlRule]:
    """One rule per pattern, all with the same TTL: how providers write their tables."""
    return [TtlRule(pattern, seconds) for pattern in patterns]


class TtlPolicy:
    """Chooses the cache TTL of a path: user rules first, then the provider's built-in ones."""

    def __init__(
        self,
        user_rules: Iterable[TtlRule] = (),
        *,
        builtin: Sequence[TtlRule] = (),
        default_ttl: float = DEFAULT_TTL,
        negative_ttl: float = NEGATIVE_TTL,
    ) -> None:
        for name, value in (("default", default_ttl), ("negative", negative_ttl)):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} TTL must be a finite number >= 0, not {value!r}")
        self._rules = (*user_rules, *builtin)
        self.default_ttl = default_ttl
        self.negative_ttl = negative_ttl

    @classmethod
    def from_rules(cls, texts: Iterable[str], *, builtin: Sequence[TtlRule] = ()) -> TtlPolicy:
        """Parse ``PATTERN=SECONDS`` rules; ``default=S`` and ``negative=S`` set those TTLs.

        The split is on the last ``=``: tag keys, and so mount paths, may contain ``=``.
        """
        parsed: list[TtlRule] = []
        special: dict[str, float] = {}
        for text in texts:
            pattern, sep, value = text.rpartition("=")
            pattern = pattern.strip()
            if not sep or not pattern:
                raise ConfigError(f"TTL rule {text!r} is not PATTERN=SECONDS")
            try:
                seconds = float(value)
            except ValueError:
                raise ConfigError(f"TTL rule {text!r}: {value!r} is not a number") from None
            if pattern in ("default", "negative"):
                special[pattern] = seconds
            else:
                parsed.append(TtlRule(pattern, seconds))
        return cls(
            parsed,
            builtin=builtin,
            default_ttl=special.get("default", DEFAULT_TTL),
            negative_ttl=special.get("negative", NEGATIVE_TTL),
        )

    def ttl(self, path: str) -> float:
        """The TTL of mount path *path* (a listing ends in ``/``; the root's is ``""``)."""
        for rule in self._rules:
            if rule.matches(path):
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
