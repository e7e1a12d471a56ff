"""The ``dicomStores.deidentify`` handler: each selected source instance is read, de-identified
by ``dicom.deid`` and stored into the destination store; an instance that fails is counted and
left out (Cloud Healthcare: "The LRO result may still be successful if de-identification fails
for some DICOM instances. The output DICOM store will not contain these failed resources.")."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select

from dicomql.dicom.deid.engine import Deidentifier, deidentify_bytes
from dicomql.service import lro
from dicomql.service.ingest import ingest_bytes
from dicomql.service.workers import OperationContext, OperationFailedError
from dicomql.store.schema import dicom_stores

log = logging.getLogger("dicomql.service.deidentify")

# Below this many instances a process pool costs more to start than it saves.
_POOL_THRESHOLD = 32
# Instances in flight at once: bounded memory, and both cores kept busy.
_WINDOW = 8
_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
           NotImplementedError, RuntimeError, EOFError)


@contextmanager
def _executor(size: int) -> Iterator[Executor | None]:
    if size < _POOL_THRESHOLD or (os.cpu_count() or 1) < 2:
        yield None
        return
    # forkserver: the worker thread's process holds database connections and threads that a
    # plain fork would copy into the children.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=os.cpu_count(), mp_context=context) as pool:
        yield pool


def run_deidentify(ctx: OperationContext) -> dict[str, Any]:
    source_pk = lro.require_store_pk(ctx)
    request = ctx.request
    destination_pk: int = request["destination_pk"]
    service = ctx.service
    with service.index.connect() as conn:
        found = conn.execute(
            select(dicom_stores.c.pk).where(dicom_stores.c.pk == destination_pk)
        ).first()
    if found is None:
        raise OperationFailedError(
            lro.NOT_FOUND, f"DICOM store {request['body']['destinationStore']} not found."
        )
    body = request["body"]
    deidentifier = Deidentifier(
        body.get("config") or {}, operation_key=bytes.fromhex(request["operation_key"])
    )
    paths = lro.selection_paths(ctx)
    scope = request.get("scope", {})
    after = int(ctx.checkpoint or 0)
    with service.index.connect() as conn:
        total = lro.count_selected(conn, source_pk, scope, paths, after)
    ctx.set_pending(total)
    rows = lro.iter_selected(service.index.connect, source_pk, scope, paths, after)
    with _executor(total) as pool:
        window: list[tuple[Any, Future[bytes] | bytes | Exception]] = []
        for row in rows:
            window.append((row, _submit(pool, deidentifier, service, row)))
            if len(window) >= _WINDOW:
                _store(ctx, destination_pk, window.pop(0))
        while window:
            _store(ctx, destination_pk, window.pop(0))
    return {
        "@type": "type.googleapis.com/google.cloud.healthcare.v1.deidentify."
        "DeidentifyDicomStoreSummary"
    }


def _submit(
    pool: Executor | None, deidentifier: Deidentifier, service: Any, row: Any
) -> Future[bytes] | bytes | Exception:
    try:
        with service.blobs.open(row.blob_key) as file:
            data = file.read()
        if pool is not None:
            return pool.submit(deidentify_bytes, deidentifier, data)
        return deidentify_bytes(deidentifier, data)
    except (OSError, *_ERRORS) as exc:
        return exc


def _store(
    ctx: OperationContext,
    destination_pk: int,
    item: tuple[Any, Future[bytes] | bytes | Exception],
) -> None:
    row, outcome = item
    try:
        data = outcome.result() if isinstance(outcome, Future) else outcome
    except _ERRORS as exc:
        data = exc
    if isinstance(data, Exception):
        log.warning("de-identifying %s failed: %s", row.sop_instance_uid, data)
        ctx.progress(failure=1, checkpoint=row.pk)
        return
    service = ctx.service
    result = ingest_bytes(service.index, service.blobs, destination_pk, data)
    if not result.ok:
        log.warning("storing de-identified %s failed: %s", row.sop_instance_uid, result.message)
    ctx.progress(success=int(result.ok), failure=int(not result.ok), checkpoint=row.pk)
