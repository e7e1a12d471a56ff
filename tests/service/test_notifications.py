"""Pub/Sub notifications of stored instances (issue 5): STOW and import through the real service,
messages published over HTTP to a Pub/Sub API double found through PUBSUB_EMULATOR_HOST."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from dicomql.config import Endpoints
from dicomql.provider.client import Client
from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from dicomql.sql.engine import Engine
from tests.support.dicomweb import make_instance, multipart
from tests.support.lro import make_stores, run, store_path, stow
from tests.support.pubsub_double import PubsubDouble, running_pubsub_double

TOPIC = "projects/p/topics/dicom-events"
LEGACY_TOPIC = "projects/p/topics/legacy"


@pytest.fixture
def pubsub() -> Iterator[PubsubDouble]:
    with running_pubsub_double() as double:
        yield double


@pytest.fixture
def service(pubsub: PubsubDouble, service_config: ServiceConfig) -> Iterator[httpx.Client]:
    """The embedded service, publishing to the double as to a Pub/Sub emulator."""
    endpoints = Endpoints(pubsub_emulator_host=f"127.0.0.1:{pubsub.port}")
    transport = InProcessTransport(create_app(replace(service_config, endpoints=endpoints)))
    with httpx.Client(transport=transport, base_url="http://embedded") as client:
        yield client


MARKER_SOP = "1.2.9.9"


def announced_before_a_marker(
    pubsub: PubsubDouble, service: httpx.Client, topic: str
) -> list[dict[str, Any]]:
    """The messages ``topic`` received for what the test did, without the marker instance stored
    now: events are delivered in the order they were written, so once the marker's message has
    arrived, anything the test's requests announced has arrived before it (a negative check
    without waiting for a guessed time)."""
    stow(service, "s", make_instance("1.2", "1.2.9", MARKER_SOP))
    deadline = time.monotonic() + 30
    while not any(sop_of(message) == MARKER_SOP for message in pubsub.messages(topic)):
        assert time.monotonic() < deadline, f"the marker was not announced: {pubsub.received}"
        time.sleep(0.05)
    messages = pubsub.messages(topic)
    assert sop_of(messages[-1]) == MARKER_SOP, messages  # nothing after it: it came last
    return messages[:-1]


def sop_of(message: dict[str, Any]) -> str:
    """The announced instance's UID (the legacy config's message carries only its name)."""
    return decoded(message).rpartition("/instances/")[2]


def decoded(message: dict[str, Any]) -> str:
    return base64.b64decode(message["data"]).decode()


def test_stow_publishes_one_message_per_instance_with_googles_attributes(
    pubsub: PubsubDouble, service: httpx.Client
) -> None:
    make_stores(service, "s", notificationConfigs=[{"pubsubTopic": TOPIC}])
    study, series, sop = "1.2.3", "1.2.3.4", "1.2.3.4.5"
    before = time.time()
    stow(service, "s", make_instance(study, series, sop, modality="MR"))
    (message,) = pubsub.wait_for(TOPIC, 1)
    store = "projects/p/locations/l/datasets/d/dicomStores/s"
    assert decoded(message) == f"{store}/dicomWeb/studies/{study}/series/{series}/instances/{sop}"
    attributes = message["attributes"]
    updated = parsedate_to_datetime(attributes.pop("lastUpdatedTime"))
    assert before - 1 <= updated.timestamp() <= time.time()
    version = int(attributes.pop("versionId"))
    assert abs(version / 1e6 - updated.timestamp()) < 1
    assert attributes == {
        "action": "StoreInstances",
        "storeName": store,
        "studyInstanceUID": study,
        "seriesInstanceUID": series,
        "sopInstanceUID": sop,
        "modality": "MR",
        "storageClass": "STANDARD",
    }


def test_duplicates_and_conflicts_are_not_announced(
    pubsub: PubsubDouble, service: httpx.Client
) -> None:
    make_stores(service, "s", notificationConfigs=[{"pubsubTopic": TOPIC}])
    first = make_instance("1.2", "1.2.3", "1.2.3.4")
    stow(service, "s", first)
    stow(service, "s", first)  # a duplicate: Cloud Healthcare ignores it
    stow(service, "s", make_instance("1.2", "1.2.3", "1.2.3.5"))
    messages = announced_before_a_marker(pubsub, service, TOPIC)
    assert sorted(m["attributes"]["sopInstanceUID"] for m in messages) == ["1.2.3.4", "1.2.3.5"]


def test_the_single_legacy_notification_config_carries_only_the_resource_name(
    pubsub: PubsubDouble, service: httpx.Client
) -> None:
    make_stores(service, "s", notificationConfig={"pubsubTopic": LEGACY_TOPIC})
    stow(service, "s", make_instance("1.2", "1.2.3", "1.2.3.4"))
    (message,) = pubsub.wait_for(LEGACY_TOPIC, 1)
    assert decoded(message).endswith("/studies/1.2/series/1.2.3/instances/1.2.3.4")
    assert "attributes" not in message


def _import(client: httpx.Client, folder: Path) -> None:
    operation = run(client, f"{store_path('s')}:import", {"gcsSource": {"uri": f"{folder}/*"}})
    assert "error" not in operation, operation


@pytest.mark.parametrize("send_for_bulk_import", [True, False])
def test_import_notifies_the_legacy_config_only_with_send_for_bulk_import(
    pubsub: PubsubDouble, service: httpx.Client, tmp_path: Path, send_for_bulk_import: bool
) -> None:
    make_stores(
        service,
        "s",
        notificationConfig={
            "pubsubTopic": LEGACY_TOPIC,
            "sendForBulkImport": send_for_bulk_import,
        },
        notificationConfigs=[{"pubsubTopic": TOPIC}],
    )
    folder = tmp_path / "import"
    folder.mkdir()
    for number in range(3):
        (folder / f"{number}.dcm").write_bytes(make_instance("1.2", "1.2.3", f"1.2.3.{number}"))
    _import(service, folder)
    # DicomNotificationConfig has no opt-out: import always reaches notificationConfigs.
    messages = pubsub.wait_for(TOPIC, 3)
    assert {message["attributes"]["action"] for message in messages} == {"ImportDicomData"}
    if send_for_bulk_import:
        assert len(pubsub.wait_for(LEGACY_TOPIC, 3)) == 3
    else:
        # A STOW reaches the legacy config: its message proves the import's would have come.
        assert announced_before_a_marker(pubsub, service, LEGACY_TOPIC) == []


def test_import_reports_the_storage_class_it_sets(
    pubsub: PubsubDouble, service: httpx.Client, tmp_path: Path
) -> None:
    make_stores(service, "s", notificationConfigs=[{"pubsubTopic": TOPIC}])
    folder = tmp_path / "import"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(make_instance("1.2", "1.2.3", "1.2.3.4"))
    operation = run(
        service,
        f"{store_path('s')}:import",
        {
            "gcsSource": {"uri": f"{folder}/*"},
            "blobStorageSettings": {"blobStorageClass": "COLDLINE"},
        },
    )
    assert "error" not in operation, operation
    (message,) = pubsub.wait_for(TOPIC, 1)
    assert message["attributes"]["storageClass"] == "COLDLINE"


def test_delivery_is_retried_after_pubsub_answers_503(
    pubsub: PubsubDouble, service: httpx.Client
) -> None:
    make_stores(service, "s", notificationConfigs=[{"pubsubTopic": TOPIC}])
    pubsub.fail_next = [503, 503]
    stow(service, "s", make_instance("1.2", "1.2.3", "1.2.3.4"))
    (message,) = pubsub.wait_for(TOPIC, 1)
    assert message["attributes"]["sopInstanceUID"] == "1.2.3.4"
    assert pubsub.requests == 3  # two refused, then accepted once: no duplicate


def test_many_instances_of_one_stow_are_published_in_one_request(
    pubsub: PubsubDouble, service: httpx.Client
) -> None:
    make_stores(service, "s", notificationConfigs=[{"pubsubTopic": TOPIC}])
    body, content_type = multipart([make_instance("1.2", "1.2.3", f"1.2.3.{n}") for n in range(10)])
    response = service.post(
        f"{store_path('s')}/dicomWeb/studies",
        content=body,
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 200, response.text
    assert len(pubsub.wait_for(TOPIC, 10)) == 10
    assert pubsub.requests == 1


def test_a_store_created_from_sql_notifies_end_to_end(
    pubsub: PubsubDouble, service: httpx.Client
) -> None:
    engine = Engine(Client(service))
    engine.execute(
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId) "
        "SELECT 'p', 'l', 'd'"
    )
    configs = json.dumps([{"pubsubTopic": TOPIC}])
    engine.execute(
        "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId, "
        f"dicomStoreId, data__notificationConfigs) SELECT 'p', 'l', 'd', 's', '{configs}'"
    )
    stow(service, "s", make_instance("1.2", "1.2.3", "1.2.3.4"))
    (message,) = pubsub.wait_for(TOPIC, 1)
    assert message["attributes"]["storeName"].endswith("/datasets/d/dicomStores/s")


def test_set_blob_storage_settings_announces_each_instance_whose_class_changed(
    pubsub: PubsubDouble, service: httpx.Client
) -> None:
    make_stores(service, "s", notificationConfigs=[{"pubsubTopic": TOPIC}])
    stow(service, "s", make_instance("1.2", "1.2.3", "1.2.3.4", modality="CT"))
    stow(service, "s", make_instance("1.2", "1.2.3", "1.2.3.5", modality="CT"))
    pubsub.wait_for(TOPIC, 2)
    body = {"blobStorageSettings": {"blobStorageClass": "ARCHIVE"}}
    operation = run(service, f"{store_path('s')}:setBlobStorageSettings", body)
    assert "error" not in operation, operation
    messages = pubsub.wait_for(TOPIC, 4)[2:]
    assert sorted(m["attributes"]["sopInstanceUID"] for m in messages) == ["1.2.3.4", "1.2.3.5"]
    for message in messages:
        attributes = message["attributes"]
        assert attributes["action"] == "SetBlobSettings"
        assert attributes["storageClass"] == "ARCHIVE"
        assert attributes["previousStorageClass"] == "STANDARD"
        assert attributes["modality"] == "CT"
    # The same class again changes nothing, so nothing more is announced.
    operation = run(service, f"{store_path('s')}:setBlobStorageSettings", body)
    assert "error" not in operation, operation
    assert len(announced_before_a_marker(pubsub, service, TOPIC)) == 4
