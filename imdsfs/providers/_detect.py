"""Which cloud is this? ``--provider auto``: DMI first, then probes, as cloud-init does.

1. DMI (``/sys/class/dmi/id``) costs nothing and needs no network: the firmware names the
   cloud (cloud-init's ``ds-identify`` reads the same files). ``IMDSFS_DMI_DIR`` points
   elsewhere, for tests.
2. Where DMI says nothing (some containers, unknown hypervisors), every known service is
   probed at once, each within a short deadline for its whole exchange and reading a few KB
   at most (a service dripping bytes, or sending without end, must not hold up or swell
   startup), and the most specific answer wins: GCE's ``Metadata-Flavor: Google`` response
   header proves GCE, Azure's ``/metadata/versions`` (or its JSON error) proves Azure; an
   EC2-style answer alone does not prove AWS (OpenStack and others answer those paths too),
   so OpenStack's own path is asked before concluding EC2.
3. Nothing answers (IMDS not up yet at boot, or not a cloud): EC2, as before ``auto`` existed.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from .._errors import ConfigError
from .._provider import Provider
from .._settings import ClientConfig

__all__ = ["DMI_DIR_ENV", "detect", "dmi_dir", "from_dmi"]

log = logging.getLogger(__name__)

DMI_DIR_ENV = "IMDSFS_DMI_DIR"
DMI_DIR = "/sys/class/dmi/id"
PROBE_TIMEOUT = 1.0  # to connect, and then for each read, as before there was a deadline
# A probe's whole exchange: the two timeouts above, so a service that answered in time then
# still does, however its bytes come (a drip of one each 0.5 s reset the read timeout forever).
PROBE_DEADLINE = 2 * PROBE_TIMEOUT
# The answers the probes look for are under 1 KB: EC2's token, Nova's and Azure's lists of
# versions, GCE's root listing. A longer one is none of them (see _capped).
PROBE_MAX_BODY = 16 << 10
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
OPENSTACK_PRODUCTS = ("OpenStack Nova", "OpenStack Compute")
OPENSTACK_ASSET_TAGS = (
    "HUAWEICLOUD",
    "OpenTelekomCloud",
    "SAP CCloud VM",
    "Samsung Cloud Platform",
)


@dataclass(frozen=True)
class _Dmi:
    product_name: str
    product_serial: str
    product_uuid: str
    sys_vendor: str
    chassis_asset_tag: str

    @classmethod
    def read(cls, directory: Path) -> _Dmi:
        def field(name: str) -> str:
            try:
                return (directory / name).read_text(errors="replace").strip()
            except OSError:  # absent, or root-only (product_serial, product_uuid)
                return ""

        return cls(*(field(name) for name in cls.__dataclass_fields__))


def dmi_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get(DMI_DIR_ENV) or DMI_DIR)


def from_dmi(directory: Path) -> str | None:
    """The cloud the firmware names, or None."""
    dmi = _Dmi.read(directory)
    if dmi.product_name in ("Google Compute Engine", "Google") or dmi.product_serial.startswith(
        "GoogleCloud-"
    ):
        return "gce"
    if dmi.chassis_asset_tag == AZURE_ASSET_TAG:
        return "azure"
    if dmi.product_name in OPENSTACK_PRODUCTS or dmi.chassis_asset_tag in OPENSTACK_ASSET_TAGS:
        return "openstack"
    uuid = dmi.product_uuid.lower()
    if uuid.startswith("ec2") or dmi.sys_vendor == "Amazon EC2":
        return "ec2"
    return None


def detect(
    config: ClientConfig, environ: Mapping[str, str], known: Mapping[str, type[Provider]]
) -> tuple[str, str]:
    """The provider for this machine, among the *known* ones, and why."""
    directory = dmi_dir(environ)
    named = from_dmi(directory)
    if named is not None and named in known:
        return named, f"the firmware says so (DMI in {directory})"
    answered = _probe(config, environ, known)
    if answered is not None:
        return answered, "its metadata service answered (DMI named no cloud imdsfs knows)"
    return "ec2", "DMI named no cloud, and no metadata service answered (yet)"


def _probe(
    config: ClientConfig, environ: Mapping[str, str], known: Mapping[str, type[Provider]]
) -> str | None:
    """Ask every known service at once; the most specific answer wins."""
    probes = {name: probe for name, probe in _PROBES.items() if name in known}
    with concurrent.futures.ThreadPoolExecutor(max(1, len(probes))) as pool:
        futures = {
            name: pool.submit(probe, _base(known[name], config, environ))
            for name, probe in probes.items()
        }
        answers = {name: future.result() for name, future in futures.items()}
    return next((name for name in _PROBES if answers.get(name)), None)  # most telling first


def _base(provider: type[Provider], config: ClientConfig, environ: Mapping[str, str]) -> str:
    """Where to probe *provider*: the endpoint given, else its default."""
    try:
        return provider.resolve_endpoint(config, environ)
    except ConfigError:  # a bad override for one provider must not stop the others' probes
        return ""


@dataclass(frozen=True)
class _Reply:
    """What the probes judge an answer by; its body read whole, and so short (_capped)."""

    status_code: int
    headers: httpx.Headers
    body: bytes


_PLAIN = {"Accept-Encoding": "identity"}  # the body is read as sent (_capped): ask for it so


def _answers(method: str, url: str, headers: Mapping[str, str]) -> _Reply | None:
    """*url*'s answer within PROBE_DEADLINE, all told, or None. In a trio run of its own, for
    a deadline that cancels whatever is under way (a per-read timeout does not bound a drip):
    each probe has a thread, and the caller may itself be in a run (``dump``'s client)."""
    if not url.startswith("http"):
        return None
    return trio.run(_ask, method, url, headers)


async def _ask(method: str, url: str, headers: Mapping[str, str]) -> _Reply | None:
    with trio.move_on_after(PROBE_DEADLINE):
        try:
            async with (
                httpx.AsyncClient(trust_env=False, timeout=PROBE_TIMEOUT, headers=_PLAIN) as client,
                client.stream(method, url, headers=headers) as reply,
            ):
                body = await _capped(reply)
        except (httpx.HTTPError, OSError, ValueError):
            return None
        return None if body is None else _Reply(reply.status_code, reply.headers, body)
    return None


async def _capped(reply: httpx.Response) -> bytes | None:
    """*reply*'s body as sent (undecoded: no gzip bomb), or None past PROBE_MAX_BODY. An answer
    that long is none a probe looks for, so it counts as no answer rather than being cut short
    and judged: cut JSON proves no Azure, nor does "latest" in a flood prove OpenStack; GCE's
    and EC2's probes need no body, but a service that floods them is not one imdsfs knows."""
    declared = reply.headers.get("Content-Length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > PROBE_MAX_BODY:
        return None  # known too long before a byte is read
    body = bytearray()
    async for chunk in reply.aiter_raw():
        body += chunk
        if len(body) > PROBE_MAX_BODY:
            return None
    return bytes(body)


def _gce(base: str) -> bool:
    reply = _answers("GET", f"{base}/computeMetadata/v1/", {"Metadata-Flavor": "Google"})
    return reply is not None and reply.headers.get("Metadata-Flavor") == "Google"


def _azure(base: str) -> bool:
    """Azure's list of api-versions, or its JSON error: a 429 when others on the VM have used
    up its 5 requests a second (as at boot), a 400 should it refuse the probe."""
    reply = _answers("GET", f"{base}/metadata/versions", {"Metadata": "true"})
    if reply is None or reply.status_code not in (200, 400, 429):
        return False
    try:
        answer = json.loads(reply.body)
    except (ValueError, RecursionError):  # nested past what json can walk, too
        return False
    if not isinstance(answer, dict):
        return False
    if reply.status_code == 200:
        return isinstance(answer.get("apiVersions"), list)
    return isinstance(answer.get("error"), str)


def _openstack(base: str) -> bool:
    reply = _answers("GET", f"{base}/openstack/", {})
    return reply is not None and reply.status_code == 200 and b"latest" in reply.body


def _ec2(base: str) -> bool:
    reply = _answers(
        "PUT", f"{base}/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    )
    return reply is not None and reply.status_code in (200, 401, 403)


_PROBES: dict[str, Callable[[str], bool]] = {
    "gce": _gce,
    "azure": _azure,
    "openstack": _openstack,
    "ec2": _ec2,
}
