"""IAM policies of datasets and DICOM stores: read, and replaced only when the caller's etag
still matches (a compare-and-set in one statement, safe across servers sharing the index)."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from dicomql.store.schema import iam_policies

# What Google's service answers for a resource whose policy was never set.
EMPTY_ETAG = "ACAB"


@dataclass(frozen=True)
class StoredPolicy:
    policy: dict[str, Any]  # version, bindings, auditConfigs (no etag)
    etag: str


def _owner(dataset_pk: int | None, store_pk: int | None) -> Any:
    if store_pk is not None:
        return iam_policies.c.store_pk == store_pk
    return (iam_policies.c.dataset_pk == dataset_pk) & iam_policies.c.store_pk.is_(None)


def read_policy(
    conn: Connection, *, dataset_pk: int | None = None, store_pk: int | None = None
) -> StoredPolicy:
    """The policy of a dataset (``dataset_pk``) or a DICOM store (``store_pk``)."""
    row = conn.execute(
        select(iam_policies.c.policy, iam_policies.c.etag).where(_owner(dataset_pk, store_pk))
    ).first()
    if row is None:
        return StoredPolicy({}, EMPTY_ETAG)
    return StoredPolicy(dict(row.policy), row.etag)


def replace_policy(
    conn: Connection,
    policy: dict[str, Any],
    expected_etag: str | None,
    *,
    dataset_pk: int | None = None,
    store_pk: int | None = None,
) -> StoredPolicy | None:
    """Store ``policy`` with a new etag, if ``expected_etag`` (when given) is still current.

    Returns:
        the stored policy, or None when the etag no longer matches (a concurrent change).
    """
    etag = base64.b64encode(b"\x07" + secrets.token_bytes(7)).decode()
    moment = datetime.now(UTC)
    current = conn.execute(
        select(iam_policies.c.pk, iam_policies.c.etag).where(_owner(dataset_pk, store_pk))
    ).first()
    if current is None:
        if expected_etag not in (None, EMPTY_ETAG):
            return None
        conn.execute(
            insert(iam_policies).values(
                dataset_pk=dataset_pk if store_pk is None else None,
                store_pk=store_pk,
                policy=policy,
                etag=etag,
                update_time=moment,
            )
        )
        return StoredPolicy(policy, etag)
    statement = update(iam_policies).where(iam_policies.c.pk == current.pk)
    if expected_etag is not None:
        statement = statement.where(iam_policies.c.etag == expected_etag)
    changed = conn.execute(statement.values(policy=policy, etag=etag, update_time=moment))
    if changed.rowcount != 1:
        return None
    return StoredPolicy(policy, etag)
