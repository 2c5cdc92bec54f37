"""systemd notifications: `READY=1`, `WATCHDOG=1`, `STOPPING=1` to `$NOTIFY_SOCKET`.

Hand-written: the protocol is one datagram on a Unix socket. systemd-python needs
libsystemd's headers to build, and the pure-Python packages would add a dependency for
these few lines.
"""

from __future__ import annotations

import os
import socket

from .logging import get_logger

log = get_logger(__name__)


def notify(state: str) -> bool:
    """Send `state` when running under systemd with Type=notify; False when not sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        # An abstract socket: its name starts with a NUL byte.
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as error:
        log.warn("cannot notify systemd", state=state, error=error)
        return False
    return True
