"""A free loopback port for the tests' real servers (the kernel picks it: no fixed ports, so
parallel workers never collide)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
