"""The clouds imdsfs knows, by name: ``--provider NAME`` picks one.

A new cloud is a module here with a `Provider` subclass (see ``imdsfs/_provider.py`` for the
interface and ``ec2.py`` for a complete one), registered in `PROVIDERS`; its emulator goes
in ``imdsfs/emulator``. Nothing else changes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

from .._errors import ConfigError
from .._provider import Provider
from .._settings import ClientConfig
from ._detect import detect, dmi_dir, from_dmi
from .azure import AzureProvider
from .ec2 import Ec2Provider
from .gce import GceProvider
from .openstack import OpenStackProvider

__all__ = ["AUTO", "PROVIDERS", "check_allowed", "create"]

log = logging.getLogger(__name__)

AUTO = "auto"

PROVIDERS: dict[str, type[Provider]] = {
    "azure": AzureProvider,
    "ec2": Ec2Provider,
    "gce": GceProvider,
    "openstack": OpenStackProvider,
}


def create(config: ClientConfig, environ: Mapping[str, str] | None = None) -> Provider:
    """The provider *config* names (``auto``: this machine's), configured from its flags and
    *environ*."""
    environ = os.environ if environ is None else environ
    why = None
    if config.provider == AUTO:
        name, why = detect(config, environ, PROVIDERS)
        config = dataclasses.replace(config, provider=name)
        log.debug("provider %s: %s", name, why)
    provider = _provider_class(config)(config, environ)
    provider.detected = why
    return provider


def check_allowed(config: ClientConfig, environ: Mapping[str, str]) -> None:
    """ConfigError when the environment forbids asking the provider's service at all. With
    ``auto``, the provider the firmware names; if it names none, any provider's refusal
    counts, since probing would ask them all."""
    names = [config.provider]
    if config.provider == AUTO:
        named = from_dmi(dmi_dir(environ))
        names = [named] if named in PROVIDERS else sorted(PROVIDERS)
    for name in names:
        refusal = _provider_class(dataclasses.replace(config, provider=name)).refusal(environ)
        if refusal is not None:
            raise ConfigError(refusal)


def _provider_class(config: ClientConfig) -> type[Provider]:
    try:
        return PROVIDERS[config.provider]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigError(f"unknown provider {config.provider!r} (known: {known})") from None
