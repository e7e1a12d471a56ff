"""Who may talk to the service over HTTP, and how it names itself in absolute URLs.

- The Host allow-list refuses names the server is not served under, so a web page cannot reach
  a loopback server through DNS rebinding (the fix of Ollama's and Jupyter's advisories).
- CORS answers only the origins the operator names (Chrome's Private Network Access preflight
  too); other origins' preflights get a 403 that names ``--cors-origin``.
- Absolute URLs (RetrieveURL, BulkDataURI) come from ``--public-url``, else from the allowed Host
  and, only from trusted proxies, ``Forwarded`` / ``X-Forwarded-*``.

docs/security.md states the threat model these serve.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from dicomql.service import errors
from dicomql.service.config import ServiceConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A host with an optional port, as a proxy may write it (RFC 7230 5.4, RFC 7239 5.3); anything
# else in a forwarded header is ignored rather than copied into URLs.
_HOST_AND_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?")


def check_settings(config: ServiceConfig) -> None:
    """Refuse web settings that cannot work or would open the server to every web page.

    Raises:
        ValueError: naming the flag and the problem.
    """
    if "*" in config.cors_origins and not config.auth_token:
        raise ValueError(
            "--cors-origin '*' lets every web page the user visits read and change the store; "
            "it needs --auth-token as well"
        )
    for origin in config.cors_origins:
        if origin != "*" and not _is_origin(origin):
            raise ValueError(
                f"--cors-origin '{origin}' is not an origin: expected scheme://host[:port], "
                "e.g. http://localhost:3000"
            )
    for name in config.allowed_hosts:
        if not name or "/" in name or "*" in name.removeprefix("*."):
            raise ValueError(
                f"--allowed-host '{name}' is not a host name (a leading '*.' matches subdomains)"
            )
    if config.public_url is not None:
        parts = urlsplit(config.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError(
                f"--public-url '{config.public_url}' is not an http(s) URL with a host, "
                "e.g. https://dicom.example.org"
            )
    _trusted_networks(config.forwarded_allow_ips)


def web_middleware(config: ServiceConfig) -> list[Middleware]:
    """The Host allow-list and CORS, outermost first, as ``config`` asks."""
    origins = list(config.cors_origins)
    middleware = [
        Middleware(HostAllowList, config=config),
        Middleware(CrossOriginGate, origins=origins),
    ]
    if origins:
        # Answers the named origins' preflights before authentication (they carry no
        # credentials), Chrome's Private Network Access preflight included.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                allow_private_network=True,
                expose_headers=["Content-Type", "Content-Length", "Warning", "Location"],
            )
        )
    return middleware


def host_check_applies(config: ServiceConfig) -> bool:
    """Whether the Host allow-list is enforced: on a loopback address, or on any address once
    the operator named hosts (Ollama's and Jupyter's rule); never in-process (no socket)."""
    if config.bind_host is None:
        return False
    return is_loopback(config.bind_host) or bool(config.allowed_hosts)


class HostAllowList:
    """403 for a request whose ``Host`` is not a name this server is served under.

    Not Starlette's TrustedHostMiddleware: that answers a plain-text 400 and cannot accept the
    IP literal a connection arrived on, which a server on ``0.0.0.0`` needs for its LAN address.
    """

    def __init__(self, app: ASGIApp, config: ServiceConfig) -> None:
        self.app = app
        self.enforced = host_check_applies(config)
        self.bind_host = config.bind_host
        self.names = {name.lower().rstrip(".") for name in config.allowed_hosts}
        if config.public_url is not None:
            self.names.add((urlsplit(config.public_url).hostname or "").lower())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enforced or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "")
        server = scope.get("server")
        if self.allows(host, server[0] if server else None):
            await self.app(scope, receive, send)
            return
        shown = host or "(none)"
        response = errors.error_response(
            errors.PermissionDenied(
                f"Host '{shown}' is not a name this server is served under, so the request was "
                "refused (a web page may be trying to reach it through DNS rebinding). Add the "
                "name with --allowed-host (or --public-url) if it is yours."
            )
        )
        await response(scope, receive, send)

    def allows(self, host: str, local_address: str | None) -> bool:
        """Whether ``host`` (a Host header value) names this server.

        >>> from pathlib import Path
        >>> policy = HostAllowList(None, ServiceConfig(Path("."), bind_host="127.0.0.1"))
        >>> [policy.allows(h, "127.0.0.1") for h in ("127.0.0.1:8080", "localhost", ":8080")]
        [True, True, False]
        >>> policy.allows("attacker.invalid", "127.0.0.1")
        False
        >>> lan = ServiceConfig(Path("."), bind_host="0.0.0.0", allowed_hosts=("pacs.lan",))
        >>> wide = HostAllowList(None, lan)
        >>> [wide.allows(h, "192.0.2.9") for h in ("192.0.2.9:8080", "192.0.2.10", "pacs.lan")]
        [True, False, True]
        """
        try:
            name = urlsplit(f"//{host}").hostname
        except ValueError:
            return False
        if not name:
            return False
        name = name.rstrip(".")
        if name == "localhost" or name.endswith(".localhost"):
            return True  # RFC 6761 6.3: always loopback, never resolved by DNS
        address = _ip(name)
        if address is not None:
            # An IP literal cannot be rebound; accept the addresses this server listens on.
            return (
                (address.is_loopback and is_loopback(self.bind_host))
                or address == _ip(self.bind_host)
                or address == _ip(local_address)
                or name in self.names
            )
        return any(
            name == allowed or (allowed.startswith("*.") and name.endswith(allowed[1:]))
            for allowed in self.names
        )


class CrossOriginGate:
    """Refuse the preflight of an origin the operator did not name, with no CORS headers and a
    message naming the flag (a developer's viewer on another origin lands here first)."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.any_origin = "*" in origins
        self.origins = set(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS" or self.any_origin:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or "access-control-request-method" not in headers:
            await self.app(scope, receive, send)
            return
        if origin in self.origins:
            await self.app(scope, receive, send)
            return
        response = errors.error_response(
            errors.PermissionDenied(
                f"Cross-origin requests from {origin} are not allowed. Name the origin with "
                "--cors-origin to let a viewer served there use this server."
            )
        )
        await response(scope, receive, send)


def public_origin(request: Request) -> str:
    """``scheme://host[:port][/prefix]`` for absolute URLs, or ``""`` in-process.

    ``--public-url`` wins; else the Host the request carried (already checked by
    :class:`HostAllowList` where it applies), with the scheme and host a trusted proxy forwarded
    (RFC 7239 ``Forwarded``, else ``X-Forwarded-Proto`` / ``X-Forwarded-Host``). In-process
    there is no origin to name, so URLs are relative references (``/v1/…``; RFC 3986 4.2).
    """
    config: ServiceConfig = request.app.state.service.config
    if config.public_url is not None:
        return config.public_url.rstrip("/")
    if config.bind_host is None:
        return ""
    scheme, netloc = request.url.scheme, request.url.netloc
    client = request.client
    if client is not None and _is_trusted(client.host, config.forwarded_allow_ips):
        proto, host = forwarded_scheme_and_host(request.headers)
        scheme = proto or scheme
        netloc = host or netloc
    return f"{scheme}://{netloc}"


def forwarded_scheme_and_host(headers: Headers) -> tuple[str | None, str | None]:
    """The scheme and host the nearest proxy forwarded, if it wrote well-formed ones.

    The last element of ``Forwarded`` (RFC 7239 4: each proxy appends one) or the last value of
    ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` is the one the trusted proxy wrote; values
    before it came from whoever spoke to that proxy.

    >>> forwarded_scheme_and_host(Headers({"forwarded": 'for=1.2.3.4;proto=https;host="a.org"'}))
    ('https', 'a.org')
    >>> forwarded_scheme_and_host(Headers({"x-forwarded-host": "evil, b.org:8443"}))
    (None, 'b.org:8443')
    """
    proto: str | None = None
    host: str | None = None
    forwarded = headers.getlist("forwarded")
    if forwarded:
        element = ",".join(forwarded).split(",")[-1]
        for pair in element.split(";"):
            key, _, value = pair.strip().partition("=")
            value = value.strip().strip('"')
            if key.lower() == "proto":
                proto = value
            elif key.lower() == "host":
                host = value
    else:
        proto = _last_value(headers.getlist("x-forwarded-proto"))
        host = _last_value(headers.getlist("x-forwarded-host"))
    if proto is not None:
        proto = proto.lower()
    return (
        proto if proto in ("http", "https") else None,
        host if host and _HOST_AND_PORT.fullmatch(host) else None,
    )


def _last_value(values: list[str]) -> str | None:
    if not values:
        return None
    return ",".join(values).split(",")[-1].strip() or None


def _is_trusted(peer: str, allow: tuple[str, ...]) -> bool:
    if "*" in allow:
        return True
    address = _ip(peer)
    return address is not None and any(address in net for net in _trusted_networks(allow))


@functools.lru_cache(maxsize=16)  # parsed once per setting, not per request
def _trusted_networks(allow: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """``--forwarded-allow-ips`` as networks (uvicorn's convention: IPs, CIDRs, or ``*``)."""
    networks: list[IPNetwork] = []
    for entry in allow:
        if entry == "*":
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(
                f"--forwarded-allow-ips '{entry}' is not an IP address, a network (CIDR) or '*'"
            ) from exc
    return tuple(networks)


def _is_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and parts.path == ""
        and not parts.query
        and origin == f"{parts.scheme}://{parts.netloc}"
    )


def _ip(value: str | None) -> IPAddress | None:
    if not value:
        return None
    try:
        return ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return None


def is_loopback(host: str | None) -> bool:
    """Whether a bind address is loopback (``localhost`` binds loopback addresses only)."""
    if host == "localhost":
        return True
    address = _ip(host)
    return address is not None and address.is_loopback
