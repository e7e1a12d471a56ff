"""The instance event outbox (``instance_events``): one row per stored instance and destination
(a Pub/Sub topic of ``notificationConfig(s)``, a BigQuery table of ``streamConfigs``), written in
the transaction that indexes the instance, claimed by a deliverer in any process, deleted once
delivered and retried with backoff otherwise.

Claiming follows :mod:`dicomql.store.work`: PostgreSQL claims with ``FOR UPDATE SKIP LOCKED``,
so concurrent deliverers never pick the same row; SQLite serialises writers with ``BEGIN
IMMEDIATE``. A claim is a token in ``claimed_by`` and a lease in ``lease_until``; a deliverer that
dies mid-delivery leaves a lease that expires, and the row is delivered again (at least once, as
Pub/Sub itself delivers).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select, update

from dicomql.dicom.attributes import Level
from dicomql.store import names
from dicomql.store.index import Index
from dicomql.store.records import InstanceRecord
from dicomql.store.schema import datasets, dicom_stores, instance_events, instances

PUBSUB = "pubsub"
BIGQUERY = "bigquery"

# DicomNotificationConfig.pubsubTopic: "action: The name of the endpoint that generated the
# notification. Possible values are StoreInstances, SetBlobSettings, ImportDicomData, etc."
STORE_INSTANCES = "StoreInstances"
IMPORT_DICOM_DATA = "ImportDicomData"
SET_BLOB_SETTINGS = "SetBlobSettings"
# Not a Pub/Sub action (Google lists store, import, update and delete as notifying): de-identified
# instances written into the destination store are streamed (streamConfigs: "every DICOM instance
# insertion") but not announced on Pub/Sub. See docs/notifications.md.
DEIDENTIFY = "DeidentifyDicomStore"
_PUBSUB_ACTIONS = frozenset({STORE_INSTANCES, IMPORT_DICOM_DATA, SET_BLOB_SETTINGS})
# Stream configs append on insertion only; a storage-class change inserts nothing.
_STREAM_ACTIONS = frozenset({STORE_INSTANCES, IMPORT_DICOM_DATA, DEIDENTIFY})

_LAST_ERROR_LENGTH = 1024
# The keys of a DicomStore resource that name event destinations (notificationConfig and
# notificationConfigs, streamConfigs): a resource whose JSON text has neither has none.
_DESTINATION_KEYS = ("notificationConfig", "streamConfigs")
_RESOURCE = select(dicom_stores.c.resource).where(dicom_stores.c.pk == bindparam("store"))


@dataclass(frozen=True)
class Destinations:
    """Where a store's events go for one action, read once per indexing transaction.

    Attributes:
        store_name: ``projects/…/dicomStores/…``, the ``storeName`` attribute.
        topics: (topic, with attributes): ``notificationConfigs`` carry Google's attributes,
            the single legacy ``notificationConfig`` only the resource name.
        tables: the ``bigqueryDestination`` of each stream config.
    """

    store_name: str
    topics: list[tuple[str, bool]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)


def destinations(
    conn: Connection, store_pk: int, action: str, resource_text: str | None = None
) -> Destinations | None:
    """The store's event destinations for ``action``; None when there are none (the common case,
    which costs this one primary-key lookup, or nothing when the caller read the store's
    ``resource_text``, the JSON text of its resource, already: an indexing transaction does as
    it locks the store)."""
    if resource_text is None:
        resource = conn.execute(_RESOURCE, {"store": store_pk}).scalar()
    elif not any(key in resource_text for key in _DESTINATION_KEYS):
        return None  # names no destination: not even decoded
    else:
        resource = json.loads(resource_text)
    if not resource:
        return None
    topics: list[tuple[str, bool]] = []
    if action in _PUBSUB_ACTIONS:
        # DicomStore.notificationConfigs: no opt-out field, every listed action notifies
        # ("notifications are only sent if the topic is non-empty").
        for config in resource.get("notificationConfigs") or []:
            topic = (config or {}).get("pubsubTopic")
            if topic:
                topics.append((topic, True))
        # NotificationConfig (the older single config): "sendForBulkImport: Indicates whether
        # or not to send Pub/Sub notifications on bulk import. Only supported for DICOM imports."
        legacy = resource.get("notificationConfig") or {}
        topic = legacy.get("pubsubTopic")
        if topic and (action != IMPORT_DICOM_DATA or legacy.get("sendForBulkImport") is True):
            topics.append((topic, False))
    tables: list[dict[str, Any]] = []
    if action in _STREAM_ACTIONS:
        for config in resource.get("streamConfigs") or []:
            destination = (config or {}).get("bigqueryDestination") or {}
            if destination.get("tableUri"):
                tables.append(destination)
    if not topics and not tables:
        return None
    # Only now the names: the common case (no configs) stays one narrow primary-key lookup.
    row = conn.execute(
        select(
            dicom_stores.c.store_id,
            datasets.c.project,
            datasets.c.location,
            datasets.c.dataset_id,
        )
        .join(datasets, datasets.c.pk == dicom_stores.c.dataset_pk)
        .where(dicom_stores.c.pk == store_pk)
    ).one()
    store_name = names.dicom_store_name(row.project, row.location, row.dataset_id, row.store_id)
    return Destinations(store_name, topics, tables)


def enqueue_stored(
    conn: Connection,
    store_pk: int,
    records: Sequence[InstanceRecord],
    *,
    action: str,
    storage_class: str | None = None,
    resource: str | None = None,
) -> None:
    """Write the outbox rows announcing ``records``, just indexed in this transaction.

    Args:
        action: the Pub/Sub ``action`` attribute (StoreInstances, ImportDicomData, …).
        storage_class: the class the caller gives the instances (import's
            ``blobStorageSettings``); STANDARD when None.
        resource: the store's resource as JSON text, read in this transaction; looked up
            when None.
    """
    found = destinations(conn, store_pk, action, resource)
    if found is None:
        return
    keys = [record.blob_key for record in records]
    # The instance rows' own create_time, so notifications, streamed rows and export agree.
    created = dict(
        conn.execute(
            select(instances.c.blob_key, instances.c.create_time).where(
                instances.c.blob_key.in_(keys)
            )
        ).all()
    )
    moment = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for record in records:
        instance = _instance_facts(found.store_name, record, created.get(record.blob_key, moment))
        instance["storageClass"] = storage_class or "STANDARD"
        rows += _event_rows(store_pk, found, action, instance, record.instance_attributes, moment)
    if rows:
        conn.execute(insert(instance_events), rows)


def _instance_facts(store_name: str, record: InstanceRecord, created: datetime) -> dict[str, Any]:
    parsed = record.parsed
    if created.tzinfo is None:  # SQLite returns naive UTC
        created = created.replace(tzinfo=UTC)
    return {
        "storeName": store_name,
        "studyInstanceUID": parsed.study_instance_uid,
        "seriesInstanceUID": parsed.series_instance_uid,
        "sopInstanceUID": parsed.sop_instance_uid,
        "modality": parsed.columns[Level.SERIES].get("modality") or "",
        "lastUpdated": created.astimezone(UTC).isoformat(),
        "blobStorageSize": record.size,
    }


def instance_name(facts: dict[str, Any]) -> str:
    """The instance's resource name, the notification's data (DicomNotificationConfig)."""
    path = names.dicomweb_path(
        facts["studyInstanceUID"], facts["seriesInstanceUID"], facts["sopInstanceUID"]
    )
    return f"{names.dicomweb_name(facts['storeName'])}/{path}"


def pubsub_attributes(action: str, facts: dict[str, Any]) -> dict[str, str]:
    """Google's message attributes (DicomNotificationConfig.pubsubTopic), all strings as Pub/Sub
    requires. ``lastUpdatedTime`` is RFC 1123 (Cloud Healthcare "DICOM Pub/Sub notifications");
    ``versionId`` is the microseconds since the epoch of that update (see docs/notifications.md).
    """
    updated = datetime.fromisoformat(facts["lastUpdated"]).astimezone(UTC)
    attributes = {
        "action": action,
        "lastUpdatedTime": updated.strftime("%a, %d %b %Y %H:%M:%S UTC"),
        "storeName": facts["storeName"],
        "studyInstanceUID": facts["studyInstanceUID"],
        "seriesInstanceUID": facts["seriesInstanceUID"],
        "sopInstanceUID": facts["sopInstanceUID"],
        "versionId": str(_epoch_micros(updated)),
        "modality": facts.get("modality") or "",
        "storageClass": facts.get("storageClass") or "STANDARD",
    }
    if facts.get("previousStorageClass"):
        attributes["previousStorageClass"] = facts["previousStorageClass"]
    return attributes


def _epoch_micros(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _event_rows(
    store_pk: int,
    found: Destinations,
    action: str,
    facts: dict[str, Any],
    attributes: dict[str, Any],
    moment: datetime,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    name = instance_name(facts)
    for topic, with_attributes in found.topics:
        message: dict[str, Any] = {"data": name}
        if with_attributes:
            message["attributes"] = pubsub_attributes(action, facts)
        rows.append(_row(store_pk, PUBSUB, topic, message, moment))
    for destination in found.tables:
        # The DICOM JSON travels with the row: the instance may be deleted before delivery, and
        # "instance deletions are not applied to the destination table" (streamConfigs).
        payload = {
            "instance": facts,
            "includeSourceStore": destination.get("includeSourceStore") is True,
            "attributes": attributes,
        }
        rows.append(_row(store_pk, BIGQUERY, destination["tableUri"], payload, moment))
    return rows


def _row(
    store_pk: int, kind: str, destination: str, payload: dict[str, Any], moment: datetime
) -> dict[str, Any]:
    return {
        "store_pk": store_pk,
        "kind": kind,
        "destination": destination,
        "payload": payload,
        "create_time": moment,
        "attempts": 0,
        "next_attempt_time": moment,
    }


def enqueue_storage_class_changes(
    conn: Connection, store_pk: int, changed: Sequence[dict[str, Any]]
) -> None:
    """Write SetBlobSettings notifications for instances whose storage class changed.

    Args:
        changed: per instance ``studyInstanceUID``, ``seriesInstanceUID``, ``sopInstanceUID``,
            ``modality``, ``storageClass``, ``previousStorageClass`` and ``lastUpdated``
            (ISO 8601 with offset).
    """
    if not changed:
        return
    found = destinations(conn, store_pk, SET_BLOB_SETTINGS)
    if found is None or not found.topics:
        return
    moment = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for change in changed:
        facts = {"storeName": found.store_name, **change}
        rows += _event_rows(store_pk, found, SET_BLOB_SETTINGS, facts, {}, moment)
    conn.execute(insert(instance_events), rows)


# --- delivery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One claimed outbox row."""

    pk: int
    kind: str
    destination: str
    payload: dict[str, Any]
    attempts: int


def claim_due(index: Index, worker_id: str, *, limit: int, lease: timedelta) -> list[Event]:
    """Claim up to ``limit`` due, unclaimed (or lease-expired) rows, oldest first."""
    now = datetime.now(UTC)
    token = f"{worker_id[:100]}/{secrets.token_hex(8)}"
    due = (
        select(instance_events.c.pk)
        .where(
            instance_events.c.next_attempt_time <= now,
            or_(instance_events.c.lease_until.is_(None), instance_events.c.lease_until < now),
        )
        .order_by(instance_events.c.pk)
        .limit(limit)
    )
    if index.dialect == "postgresql":
        due = due.with_for_update(skip_locked=True)
    statement = (
        update(instance_events)
        .where(instance_events.c.pk.in_(due.scalar_subquery()))
        .values(claimed_by=token, lease_until=now + lease)
        .returning(
            instance_events.c.pk,
            instance_events.c.kind,
            instance_events.c.destination,
            instance_events.c.payload,
            instance_events.c.attempts,
        )
    )
    with index.begin() as conn:
        rows = conn.execute(statement).all()
    events = [Event(row.pk, row.kind, row.destination, row.payload, row.attempts) for row in rows]
    return sorted(events, key=lambda event: event.pk)


def delivered(index: Index, pks: Sequence[int]) -> None:
    """Delete delivered rows."""
    if pks:
        with index.begin() as conn:
            conn.execute(delete(instance_events).where(instance_events.c.pk.in_(list(pks))))


def failed(
    index: Index, events: Sequence[Event], error: str, *, backoff: timedelta, give_up_after: int
) -> list[Event]:
    """Record a failed delivery: each row waits ``backoff * 2**attempts`` (at most an hour) before
    its next attempt; rows that reached ``give_up_after`` attempts are deleted and returned."""
    now = datetime.now(UTC)
    abandoned = [event for event in events if event.attempts + 1 >= give_up_after]
    retried = [event for event in events if event.attempts + 1 < give_up_after]
    with index.begin() as conn:
        if abandoned:
            conn.execute(
                delete(instance_events).where(
                    instance_events.c.pk.in_([event.pk for event in abandoned])
                )
            )
        for event in retried:
            wait = min(backoff * (2**event.attempts), timedelta(hours=1))
            conn.execute(
                update(instance_events)
                .where(instance_events.c.pk == event.pk)
                .values(
                    attempts=event.attempts + 1,
                    next_attempt_time=now + wait,
                    last_error=error[:_LAST_ERROR_LENGTH],
                    claimed_by=None,
                    lease_until=None,
                )
            )
    return abandoned


# Built once: an idle deliverer runs it every few seconds.
_NEXT_ATTEMPT = select(func.min(instance_events.c.next_attempt_time))


def next_attempt(index: Index) -> datetime | None:
    """When the outbox's earliest event is due (perhaps already), or None when it is empty: a
    read of one index entry, much cheaper than :func:`claim_due`'s write transaction, that
    lets an idle deliverer skip it, and a retrying one wait exactly until the retry."""
    with index.connect() as conn:
        earliest: datetime | None = conn.execute(_NEXT_ATTEMPT).scalar()
    if earliest is not None and earliest.tzinfo is None:  # SQLite keeps UTC without its zone
        earliest = earliest.replace(tzinfo=UTC)
    return earliest
