"""Publishing Pub/Sub messages through Pub/Sub's REST API (``projects.topics.publish``): to the
emulator named by ``PUBSUB_EMULATOR_HOST`` without credentials, else to Google with Application
Default Credentials."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import httpx

from dicomql.auth import CLOUD_PLATFORM_SCOPE, GoogleAuth
from dicomql.errors import OperationalError

GOOGLE_PUBSUB = "https://pubsub.googleapis.com"
# Pub/Sub's publish limits: 1,000 messages and 10 MB per request (Pub/Sub "Quotas and limits").
MAX_MESSAGES = 1000
MAX_REQUEST_BYTES = 9 * 1024 * 1024  # under 10 MB with room for the JSON around the messages


class PublishError(Exception):
    """A publish request that did not succeed; the messages were not (all) accepted."""


class PubsubPublisher:
    """Sends messages to topics, batched per request.

    Args:
        emulator_host: ``host:port`` of a Pub/Sub emulator (``PUBSUB_EMULATOR_HOST``, read at
            the edge); the emulator takes plain HTTP and no credentials, like Google's clients.
        transport: an httpx transport (tests); the network by default.
    """

    def __init__(
        self, *, emulator_host: str | None = None, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.base_url = f"http://{emulator_host}" if emulator_host else GOOGLE_PUBSUB
        self._emulated = bool(emulator_host)
        self._transport = transport
        self._client: httpx.Client | None = None

    def publish(self, topic: str, messages: Sequence[dict[str, Any]]) -> list[str]:
        """Publish ``messages`` (``{"data": str, "attributes": {...}}``, data as text) to
        ``topic`` (``projects/P/topics/T``); returns the message IDs Pub/Sub assigned.

        Raises:
            PublishError: a transport failure or an answer other than 200 (the caller retries).
        """
        ids: list[str] = []
        for batch in _batches(messages):
            ids += self._publish(topic, batch)
        return ids

    def _publish(self, topic: str, batch: list[dict[str, Any]]) -> list[str]:
        client = self._http()
        try:
            response = client.post(f"/v1/{topic}:publish", json={"messages": batch})
        except (httpx.HTTPError, OperationalError) as exc:  # OperationalError: token refresh
            raise PublishError(f"publishing to {topic} failed: {exc}") from exc
        if response.status_code != 200:
            raise PublishError(
                f"publishing to {topic} failed: HTTP {response.status_code}: "
                f"{_error_message(response)}"
            )
        message_ids: list[str] = response.json().get("messageIds", [])
        return message_ids

    def _http(self) -> httpx.Client:
        if self._client is None:
            auth: httpx.Auth | None = None
            if not self._emulated:
                auth = GoogleAuth(_default_credentials())
            self._client = httpx.Client(
                base_url=self.base_url, auth=auth, timeout=30, transport=self._transport
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def encode_message(data: str, attributes: dict[str, str] | None = None) -> dict[str, Any]:
    """A PubsubMessage as the REST API takes it: ``data`` base64-encoded."""
    message: dict[str, Any] = {"data": base64.b64encode(data.encode()).decode("ascii")}
    if attributes:
        message["attributes"] = attributes
    return message


def _batches(messages: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for message in messages:
        encoded = encode_message(message["data"], message.get("attributes"))
        length = len(encoded["data"]) + sum(
            len(key) + len(value) for key, value in (message.get("attributes") or {}).items()
        )
        if current and (len(current) == MAX_MESSAGES or size + length > MAX_REQUEST_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(encoded)
        size += length
    if current:
        batches.append(current)
    return batches


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def _default_credentials() -> Any:
    """Application Default Credentials with the cloud-platform scope (google-auth).

    Raises:
        PublishError: none can be found (the deliverer retries; credentials may appear).
    """
    import google.auth
    import google.auth.exceptions

    try:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise PublishError(
            f"no Google credentials to publish with, and PUBSUB_EMULATOR_HOST is not set: {exc}"
        ) from exc
    return credentials
