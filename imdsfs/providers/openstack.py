"""OpenStack's metadata service: Nova, as a guest reaches it through Neutron's proxy.

- Where: ``http://169.254.169.254``, or ``--endpoint``. The AWS SDKs' variables
  (``AWS_EC2_METADATA_*``) are AWS's and are not read here. Nova's IPv6 address,
  ``fe80::a9fe:a9fe``, is link-local: it needs an interface, so it is given with
  ``--endpoint``.
- How: plain GETs. Nova has no IMDSv2 (``PUT /latest/api/token`` is a 404 there), so no
  token is ever asked for, and no ``--allow-imdsv1`` is needed.
- Layout: EC2's (`Ec2Layout`: the categories of ``/latest/meta-data/`` at the root,
  ``public-keys``' ``0=name``, ``user-data`` beside them), from ``/latest/``: Nova's newest
  EC2 version (2009-04-04), the one a config drive also holds as ``ec2/latest/``. Nova has no
  ``dynamic/`` category. Beside it, ``openstack/`` holds the files of ``/openstack/latest/``
  as served: ``meta_data.json``, ``network_data.json``, ``vendor_data.json``,
  ``vendor_data2.json`` and ``user_data``.
- Not shown: ``openstack/password``. It is the admin password a guest agent (cloudbase-init,
  on Windows) posts back encrypted with the instance's key, usually empty on Linux; Nova
  serves it as ``text/html``, which imdsfs takes for a proxy's page, not a value (`_client`);
  a config drive never holds it; and cloud-init does not read it. Ask it with ``curl`` where
  needed.
- Secrets: EC2's, plus both copies of the user data and the vendor data (deployers put
  registration tokens and the like there).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from .._errors import ConfigError
from .._paths import SecretRules
from .._provider import ListingEntry, NodeKind, StaticHeaders, check_endpoint
from .._settings import ClientConfig
from .._transport import Transport
from .._ttl import rules
from .ec2 import Ec2Layout

__all__ = ["ENDPOINT", "OpenStackProvider"]

ENDPOINT = "http://169.254.169.254"
OPENSTACK = "openstack/"  # the mount directory of /openstack/latest/

_HOUR = 3600.0
_LONG = 6 * _HOUR  # the same for the instance's life
_MINUTES = 60.0  # changes through the API while the instance runs


class OpenStackProvider(Ec2Layout):
    name = "openstack"
    secrets = SecretRules(
        (
            *Ec2Layout.secrets.patterns,
            "openstack/user_data",
            "openstack/vendor_data.json",
            "openstack/vendor_data2.json",
        )
    )
    # EC2's rules first (listings 5 s, identity 6 h, ...). Then the documents: the static
    # vendor data is a file of the deployer's; meta_data.json carries the server's properties
    # (``meta``) and device tags, network_data.json its interfaces, both changed through the
    # API at any time; vendor_data2.json is asked of the deployer's services per request; the
    # user data keeps the TTL of its twin, user-data.
    ttl_rules = (
        *Ec2Layout.ttl_rules,
        *rules(_LONG, "openstack/vendor_data.json"),
        *rules(
            _MINUTES,
            "openstack/meta_data.json",
            "openstack/network_data.json",
            "openstack/vendor_data2.json",
            "openstack/user_data",
        ),
    )
    root_extras = (
        ListingEntry("openstack", NodeKind.DIRECTORY, OPENSTACK),
        ListingEntry("user-data", NodeKind.FILE, "user-data"),
    )

    @classmethod
    def resolve_endpoint(cls, config: ClientConfig, environ: Mapping[str, str]) -> str:
        if config.endpoint is not None:
            return check_endpoint(config.endpoint)
        if config.endpoint_mode is not None and config.endpoint_mode.lower() != "ipv4":
            raise ConfigError(
                "OpenStack's IPv6 metadata address (fe80::a9fe:a9fe) is link-local, on one "
                "interface: give it with --endpoint"
            )
        return ENDPOINT

    def url(self, path: str) -> str:
        """``openstack/meta_data.json`` → ``/openstack/latest/meta_data.json``; the rest as
        on EC2."""
        if path.startswith(OPENSTACK):
            return f"{self.endpoint}/openstack/latest/{path.removeprefix(OPENSTACK)}"
        return super().url(path)

    def authenticator(self, transport: Transport) -> StaticHeaders:
        return StaticHeaders({})  # Nova asks for nothing

    def entries_for(self, name: str, is_dir: bool, directory: str) -> Iterator[ListingEntry]:
        if directory == OPENSTACK and name == "password":
            return  # see the module docstring
        yield from super().entries_for(name, is_dir, directory)
