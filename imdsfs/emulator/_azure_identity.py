"""Azure's signed answers: managed-identity tokens and the attested document.

Tokens (``/metadata/identity/oauth2/token``) have the shape of the real endpoint's answer
(every field a string: ``access_token``, ``client_id``, ``expires_in``, ``expires_on``,
``ext_expires_in``, ``not_before``, ``resource``, ``token_type``) and of a real access token
(a three-part JWT whose claims name the resource, tenant and identity). The signature is
random bytes: nothing can verify it, which is right for a token that no Azure issued. Like
the real service, a token is reused for the same identity and resource until it expires
(``bypass_cache=true`` asks for a new one), so ``expires_in`` counts down on the emulator
clock. Lifetime 24 hours and ``not_before`` five minutes before issue, as in a real capture.

The attested document (``/metadata/attested/document``) is ``{"encoding": "pkcs7",
"signature": base64}`` where the signature is a DER PKCS#7 SignedData holding the JSON
document (nonce, plan, sku, subscriptionId, timeStamp, vmId). It has no certificate and no
signer: ``openssl pkcs7`` parses it and finds the document, and any verification fails, as it
must off Azure. Token values are secrets: never log them.
"""

from __future__ import annotations

import base64
import json
import math
import random
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "ManagedIdentity",
    "TokenIssuer",
    "attested_document",
    "attested_signature",
    "new_request_id",
]

TOKEN_LIFETIME = 86400
_NOT_BEFORE_SKEW = 300


@dataclass(frozen=True)
class ManagedIdentity:
    """One identity assigned to the VM; ``resource_id`` is what ``msi_res_id`` names."""

    client_id: str
    object_id: str
    resource_id: str = ""
    system_assigned: bool = False


@dataclass
class _Issued:
    token: str
    issued_at: float  # emulator clock
    expires_on: int  # real UTC seconds
    not_before: int


class TokenIssuer:
    """Issues and caches tokens per (identity, resource). Thread-safe."""

    def __init__(
        self,
        clock: Callable[[], float],
        rng: random.Random,
        tenant_id: str,
        identities: list[ManagedIdentity],
    ) -> None:
        self._clock = clock
        self._rng = rng
        self.tenant_id = tenant_id
        self.identities = list(identities)
        self._cache: dict[tuple[str, str], _Issued] = {}
        self._issued: list[str] = []
        self._lock = threading.Lock()

    def find(
        self, client_id: str | None, object_id: str | None, resource_id: str | None
    ) -> ManagedIdentity | None:
        """The identity a request names, or the system-assigned one when it names none (the
        only one, too, when the VM has exactly one user-assigned identity and no system one)."""
        with self._lock:
            identities = list(self.identities)
        if client_id is not None:
            return next((i for i in identities if i.client_id == client_id), None)
        if object_id is not None:
            return next((i for i in identities if i.object_id == object_id), None)
        if resource_id is not None:
            wanted = resource_id.lower()  # ARM ids are case-insensitive
            return next((i for i in identities if i.resource_id.lower() == wanted), None)
        system = next((i for i in identities if i.system_assigned), None)
        if system is None and len(identities) == 1:
            return identities[0]
        return system

    def token(self, identity: ManagedIdentity, resource: str, *, fresh: bool) -> dict[str, str]:
        """The token JSON for ``resource``; ``fresh`` skips the cache (``bypass_cache``)."""
        now = self._clock()
        key = (identity.client_id, resource)
        with self._lock:
            issued = self._cache.get(key)
            if fresh or issued is None or now - issued.issued_at >= TOKEN_LIFETIME - 1:
                issued = self._issue(identity, resource, now)
                self._cache[key] = issued
        expires_in = max(1, math.ceil(TOKEN_LIFETIME - (now - issued.issued_at)))
        return {
            "access_token": issued.token,
            "client_id": identity.client_id,
            "expires_in": str(expires_in),
            "expires_on": str(issued.expires_on),
            "ext_expires_in": str(expires_in),
            "not_before": str(issued.not_before),
            "resource": resource,
            "token_type": "Bearer",
        }

    def issued(self) -> list[str]:
        """Every access token handed out: what a leak test looks for."""
        with self._lock:
            return list(self._issued)

    def forget(self) -> None:
        """Drop cached tokens: the next request for each gets a new one."""
        with self._lock:
            self._cache.clear()

    def _issue(self, identity: ManagedIdentity, resource: str, now: float) -> _Issued:
        iat = int(datetime.now(UTC).timestamp())
        nbf, exp = iat - _NOT_BEFORE_SKEW, iat + TOKEN_LIFETIME
        issuer = f"https://sts.windows.net/{self.tenant_id}/"
        claims: dict[str, object] = {
            "aud": resource,
            "iss": issuer,
            "iat": iat,
            "nbf": nbf,
            "exp": exp,
            "aio": self._text(60),
            "appid": identity.client_id,
            "appidacr": "2",
            "idp": issuer,
            "idtyp": "app",
            "oid": identity.object_id,
            "rh": self._text(40),
            "sub": identity.object_id,
            "tid": self.tenant_id,
            "uti": self._text(22),
            "ver": "1.0",
        }
        if identity.resource_id:
            claims["xms_mirid"] = identity.resource_id
        kid = self._text(27)
        header = {"typ": "JWT", "alg": "RS256", "x5t": kid, "kid": kid}
        signature = bytes(self._rng.getrandbits(8) for _ in range(256))
        token = ".".join((_b64url(_compact(header)), _b64url(_compact(claims)), _b64url(signature)))
        self._issued.append(token)
        return _Issued(token, now, exp, nbf)

    def _text(self, length: int) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        return "".join(self._rng.choice(alphabet) for _ in range(length))


def attested_signature(document: dict[str, object]) -> str:
    """Base64 of an unsigned DER PKCS#7 SignedData whose content is ``document`` as JSON."""
    content = json.dumps(document, separators=(",", ":")).encode()
    sha256 = _der(0x30, _der(0x06, bytes.fromhex("608648016503040201")) + _der(0x05, b""))
    data_oid = _der(0x06, bytes.fromhex("2a864886f70d010701"))
    encapsulated = _der(0x30, data_oid + _der(0xA0, _der(0x04, content)))
    signed_data = _der(
        0x30,
        _der(0x02, b"\x01")  # version 1
        + _der(0x31, sha256)  # digestAlgorithms
        + encapsulated
        + _der(0x31, b""),  # signerInfos: none
    )
    signed_data_oid = _der(0x06, bytes.fromhex("2a864886f70d010702"))
    return base64.b64encode(_der(0x30, signed_data_oid + _der(0xA0, signed_data))).decode()


def attested_document(
    compute: Mapping[str, object], nonce: str | None, version: str
) -> dict[str, object]:
    """The signed document's fields for this VM (the article's list, by api-version)."""
    now = datetime.now(UTC).replace(microsecond=0)
    plan = compute.get("plan")
    document: dict[str, object] = {
        "nonce": nonce if nonce is not None else now.strftime("%Y%m%d-%H%M%S"),
        "plan": plan if isinstance(plan, dict) else {"name": "", "product": "", "publisher": ""},
        "timeStamp": {
            "createdOn": _attested_time(now),
            "expiresOn": _attested_time(now + timedelta(hours=6)),
        },
        "vmId": compute.get("vmId", ""),
    }
    if version >= "2019-04-30":
        document["subscriptionId"] = compute.get("subscriptionId", "")
    if version >= "2019-11-01":
        document["sku"] = compute.get("sku", "")
    if version >= "2020-09-01" and compute.get("licenseType"):
        document["licenseType"] = compute["licenseType"]
    return document


def new_request_id() -> str:
    return str(uuid.uuid4())


def _attested_time(moment: datetime) -> str:
    """``11/28/18 00:16:17 -0000``, as in the article's decoded example."""
    return moment.strftime("%m/%d/%y %H:%M:%S -0000")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
