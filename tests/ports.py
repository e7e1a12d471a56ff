"""A free loopback port for the tests' real servers.

Importable from every test folder (pytest puts ``tests/`` on ``sys.path``); ``from conftest import``
is not safe when several folders have a conftest.py."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
