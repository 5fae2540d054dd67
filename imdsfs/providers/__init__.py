"""The clouds imdsfs knows, by name: ``--provider NAME`` picks one.

A new cloud is a module here with a `Provider` subclass (see ``imdsfs/_provider.py`` for the
interface and ``ec2.py`` for a complete one), registered in `PROVIDERS`; its emulator goes
in ``imdsfs/emulator``. Nothing else changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .._errors import ConfigError
from .._provider import Provider
from .._settings import ClientConfig
from .ec2 import Ec2Provider

__all__ = ["PROVIDERS", "check_allowed", "create"]

PROVIDERS: dict[str, type[Provider]] = {"ec2": Ec2Provider}


def create(config: ClientConfig, environ: Mapping[str, str] | None = None) -> Provider:
    """The provider *config* names, configured from its flags and *environ*."""
    return _provider_class(config)(config, os.environ if environ is None else environ)


def check_allowed(config: ClientConfig, environ: Mapping[str, str]) -> None:
    """ConfigError when the environment forbids asking the provider's service at all."""
    refusal = _provider_class(config).refusal(environ)
    if refusal is not None:
        raise ConfigError(refusal)


def _provider_class(config: ClientConfig) -> type[Provider]:
    try:
        return PROVIDERS[config.provider]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigError(f"unknown provider {config.provider!r} (known: {known})") from None
