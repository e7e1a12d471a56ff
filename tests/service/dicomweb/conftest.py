"""Fixtures shared by the DICOMweb tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import DicomWebClient


@pytest.fixture
def client(service_config: ServiceConfig) -> Iterator[DicomWebClient]:
    """A DICOMweb client of the test's embedded service (SQLite and PostgreSQL)."""
    client = DicomWebClient(service_config)
    try:
        yield client
    finally:
        client.close()
