"""Network helpers shared by the plugins that listen on a port (``drift serve``, the live view)."""
from __future__ import annotations

import ipaddress
import socket

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` resolves to a loopback address (only this computer can connect)."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False
