"""Telling systemd how the service is doing (``Type=notify``), without a dependency.

systemd passes the address of a datagram socket in ``$NOTIFY_SOCKET``; a service sends
``READY=1`` when it is up and ``STOPPING=1`` when it begins to shut down (sd_notify(3)). An
address starting with ``@`` is in Linux's abstract namespace, where the name starts with a
NUL byte instead. The protocol is one ``sendto``, so it is written out here rather than
pulled in from a library (s3ql and rclone do the same).
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["notify"]

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def notify(message: str) -> bool:
    """Send *message* (e.g. ``"READY=1"``) to systemd; False when not run by systemd.

    A failure to send is logged, never raised: systemd being unreachable must not take the
    mount down (it would then time the service out and say so itself).
    """
    address = os.environ.get(NOTIFY_SOCKET_ENV)
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", os.environ[NOTIFY_SOCKET_ENV], exc)
        return False
    return True
