"""The libpod attach endpoint, spoken directly: podman-py has no attach.

An HTTP ``POST .../attach`` with ``Connection: Upgrade`` answers ``101 UPGRADED``; the socket
then carries the container's stdin one way and its multiplexed stdout/stderr the other.
"""

from __future__ import annotations

import socket
import urllib.parse
from typing import Any

from oci_executor.backends.shared.engine import CONNECT_TIMEOUT
from oci_executor.channel import SocketChannel
from oci_executor.errors import ConfigurationError, ContainerError


def http_attach(address: str, path: str) -> SocketChannel:
    """POST an attach request with ``Upgrade: tcp`` and return the upgraded stream."""
    if address.startswith(("unix://", "http+unix://")):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = address.split("://", 1)[1]
        if address.startswith("http+unix://"):
            target = urllib.parse.unquote(target)
    elif address.startswith(("tcp://", "http://")):
        host, _, port = address.split("://", 1)[1].rstrip("/").rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host, int(port))
    else:
        raise ConfigurationError(f"cannot attach over {address!r}: use a unix:// or tcp:// address")
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(target)
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
            "Content-Length: 0\r\n\r\n".encode("ascii")
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("the engine closed the attach request")
            head += chunk
            if len(head) > 65536:
                raise ConnectionError("the engine's attach answer has no end of headers")
    except BaseException:
        sock.close()
        raise
    head, _, rest = head.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    if " 101 " not in status + " " and " 200 " not in status + " ":
        sock.close()
        raise ContainerError(f"Podman refused to attach: {status} {rest[:300].decode(errors='replace')}")
    sock.settimeout(None)
    return SocketChannel(sock, prefix=rest)
