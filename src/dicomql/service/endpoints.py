"""Where the outside services a deployment points the embedded service at live: an
S3-compatible object store, a BigQuery-compatible endpoint, the Pub/Sub emulator.

Like credentials these are deployment configuration, not part of a resource's URL, so they come
from the environment — read once, at the edge (``dicomql serve``, ``connect()``), and carried in
``ServiceConfig.endpoints``; nothing below reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: An S3-compatible service other than AWS (MinIO, Ceph, moto) for ``s3://`` blob URLs.
S3_ENDPOINT_ENV = "DICOMQL_S3_ENDPOINT_URL"
#: A BigQuery-compatible endpoint (an emulator), reached without credentials.
BIGQUERY_ENDPOINT_ENV = "DICOMQL_BIGQUERY_ENDPOINT"
#: The project the BigQuery endpoint's client bills (``dicomql`` when unset).
PROJECT_ENV = "GOOGLE_CLOUD_PROJECT"
#: The Pub/Sub emulator (``host:port``), published to over plain HTTP without credentials.
PUBSUB_EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"


@dataclass(frozen=True)
class Endpoints:
    """The outside services' addresses; ``None`` means the real service (AWS S3, Google)."""

    s3_endpoint_url: str | None = None
    bigquery_endpoint: str | None = None
    bigquery_project: str = "dicomql"
    pubsub_emulator_host: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Endpoints:
        """The addresses ``environ`` names (empty values count as unset)."""
        return cls(
            s3_endpoint_url=environ.get(S3_ENDPOINT_ENV) or None,
            bigquery_endpoint=environ.get(BIGQUERY_ENDPOINT_ENV) or None,
            bigquery_project=environ.get(PROJECT_ENV) or "dicomql",
            pubsub_emulator_host=environ.get(PUBSUB_EMULATOR_ENV) or None,
        )
