"""systemd sd_notify without a dependency: one datagram to $NOTIFY_SOCKET (Type=notify units)."""

from __future__ import annotations

import os
import socket


def sd_notify(state: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(state.encode())
        return True
    except OSError:
        return False
