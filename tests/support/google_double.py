"""A recording stand-in for Google's cloud (the API and its OAuth token endpoint), served by
``httpx.MockTransport`` — Google's cloud is the one thing the tests may fake — and offline
credentials to talk to it with."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

TOKEN_URI = "https://oauth2.googleapis.com/token"
CLIENT_EMAIL = "dicomql-test@my-project.iam.gserviceaccount.com"

Handler = Callable[[httpx.Request], httpx.Response]


class GoogleDouble:
    """Answers token requests with ``tokens`` in turn and API requests with ``api``; records
    every request it sees."""

    def __init__(self, api: Handler, tokens: list[str] | None = None) -> None:
        self.api = api
        self.tokens = list(tokens or ["ya29.first", "ya29.second", "ya29.third"])
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    @property
    def token_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if str(r.url) == TOKEN_URI]

    @property
    def api_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if str(r.url) != TOKEN_URI]

    def _handle(self, request: httpx.Request) -> httpx.Response:
        # A snapshot: an auth flow may send the same request object again with new headers.
        snapshot = httpx.Request(
            request.method, request.url, headers=request.headers.copy(), content=request.read()
        )
        self.requests.append(snapshot)
        if str(request.url) == TOKEN_URI:
            token = self.tokens.pop(0)
            return httpx.Response(
                200, json={"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
            )
        return self.api(request)


def service_account_key(path: Path) -> Path:
    """Write a service-account key file with a freshly generated RSA key; return its path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "my-project",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": CLIENT_EMAIL,
                "client_id": "1234",
                "token_uri": TOKEN_URI,
            }
        )
    )
    return path


def jwt_claims(assertion: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT."""
    payload = assertion.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def google_error(code: int, status: str, message: str) -> httpx.Response:
    return httpx.Response(
        code, json={"error": {"code": code, "status": status, "message": message}}
    )
