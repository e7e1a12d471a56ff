"""Fixtures of the SQL tests: an engine over the embedded service, a dataset to work in, and an
engine whose transport records the planned calls (httpx.MockTransport; faked only there)."""

from __future__ import annotations

import httpx
import pytest

from dicomql.provider.client import Client
from dicomql.sql.engine import Engine
from tests.support.sqltest import Recorder

SCOPE = {"projectsId": "proj", "locationsId": "us-central1", "datasetsId": "ds1"}


@pytest.fixture
def engine(embedded: httpx.Client) -> Engine:
    """An engine answered by the embedded service in this process."""
    return Engine(Client(embedded))


@pytest.fixture
def dataset(engine: Engine) -> dict[str, str]:
    """A dataset created through SQL; returns the template variables naming it."""
    engine.execute(
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId) "
        "SELECT :p, :l, :d",
        parameters={"p": SCOPE["projectsId"], "l": SCOPE["locationsId"], "d": SCOPE["datasetsId"]},
    )
    return dict(SCOPE)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def recording_engine(recorder: Recorder) -> Engine:
    http = httpx.Client(transport=httpx.MockTransport(recorder.handle), base_url="http://mock")
    return Engine(Client(http))
