"""IMDS paths as users see them: the mount path, which paths are secret, and how to log one.

Shared vocabulary, importable from every layer. IMDS paths are relative to ``/latest/``
(``meta-data/placement/region``, ``dynamic/...``, ``user-data``); mount paths are what a user
sees under the mountpoint (``placement/region``).
"""

from __future__ import annotations

import fnmatch

__all__ = ["SECRET_PATTERNS", "is_secret", "loggable", "mount_path"]

# Mount paths whose files hold credentials, user-supplied secrets or proofs of the instance's
# identity (Vault's EC2 auth method accepts the signed documents). fnmatch's "*" crosses "/",
# so each pattern covers its whole subtree: a credential IMDS lists as a directory too.
SECRET_PATTERNS = (
    "iam/security-credentials/*",
    "identity-credentials/*/security-credentials/*",
    "user-data",
    "dynamic/instance-identity/pkcs7",
    "dynamic/instance-identity/signature",
    "dynamic/instance-identity/rsa2048",
)


def mount_path(imds_path: str) -> str:
    """``meta-data/placement/region`` → ``placement/region``; ``dynamic/...`` stays as is."""
    path = imds_path.removeprefix("meta-data/")
    return path.rstrip("/")


def is_secret(imds_path: str) -> bool:
    """Whether *imds_path* holds, or is a directory under which files hold, credentials or
    user data (`SECRET_PATTERNS`)."""
    path = mount_path(imds_path)
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in SECRET_PATTERNS)


def loggable(imds_path: str) -> str:
    """*imds_path* as a log line may show it: below a secret directory, names are not shown
    (a credential served as a directory has its lines read as names)."""
    if not is_secret(imds_path) or imds_path == "user-data":
        return imds_path[:300]
    head, _, rest = imds_path.partition("security-credentials/")
    return f"{head}security-credentials/…" if rest else imds_path[:300]
