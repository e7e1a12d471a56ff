"""The ``dicomStores.deidentify`` handler: each selected source instance is read, de-identified
by ``dicom.deid`` and stored into the destination store; an instance that fails is counted and
left out (Cloud Healthcare: "The LRO result may still be successful if de-identification fails
for some DICOM instances. The output DICOM store will not contain these failed resources.").
Split into work items of source instance key ranges that any server's workers run."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from dicomql.dicom.deid.engine import Deidentifier, deidentify_bytes
from dicomql.google_api import DEIDENTIFY_DICOM_STORE_SUMMARY, Code
from dicomql.service import lro
from dicomql.service.workers import (
    ItemContext,
    ItemizedMethod,
    OperationContext,
    OperationFailedError,
    WorkContext,
)
from dicomql.store import events
from dicomql.store.ingest import store_instances
from dicomql.store.instances import StoreNotFound
from dicomql.store.resources import dicom_store_exists
from dicomql.store.selections import iter_selected, plan_ranges

log = logging.getLogger("dicomql.service.deidentify")

# Below this many instances a process pool costs more to start than it saves.
_POOL_THRESHOLD = 32
# Storing the output (parsing and indexing it, in the worker thread) costs more than
# de-identifying it: measured on 2 cores, 64 instances/s in one thread against 44/s with a
# 2-process pool competing with the storing thread. So the pool only pays with more cores.
_POOL_MIN_CORES = 4
# Instances stored per index transaction; two such batches are in flight at once (bounded
# memory, both cores kept busy).
_WINDOW = 16
_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    OverflowError,
    NotImplementedError,
    RuntimeError,
    EOFError,
)


@contextmanager
def _executor(size: int) -> Iterator[Executor | None]:
    if size < _POOL_THRESHOLD or (os.cpu_count() or 1) < _POOL_MIN_CORES:
        yield None
        return
    # forkserver: the worker thread's process holds database connections and threads that a
    # plain fork would copy into the children.
    context = multiprocessing.get_context("forkserver")
    workers = max(1, (os.cpu_count() or 2) - 1)  # one core stays with the storing thread
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield pool


# Source instances per work item: two process-pool windows' worth, a second or so of one core.
INSTANCES_PER_ITEM = 64


def _require_destination(ctx: WorkContext) -> int:
    destination_pk: int = ctx.request["destination_pk"]
    with ctx.service.index.connect() as conn:
        found = dicom_store_exists(conn, destination_pk)
    if not found:
        raise OperationFailedError(
            Code.NOT_FOUND, f"DICOM store {ctx.request['body']['destinationStore']} not found."
        )
    return destination_pk


def plan_deidentify(ctx: OperationContext) -> list[dict[str, Any]]:
    source_pk = lro.require_store_pk(ctx)
    _require_destination(ctx)
    # An operation a previous version ran whole has a checkpoint: the last instance key done.
    return plan_ranges(
        ctx.service.index.connect,
        source_pk,
        ctx.request.get("scope", {}),
        lro.selection_paths(ctx),
        INSTANCES_PER_ITEM,
        int(ctx.checkpoint or 0),
    )


def deidentify_item(ctx: ItemContext) -> None:
    """De-identify and store the item's instances. The operation's key makes the output of an
    instance the same bytes every time, so storing it again (an item re-run after its worker
    died) finds the identical instance: a success, not a second copy."""
    source_pk = lro.require_store_pk(ctx)
    destination_pk = _require_destination(ctx)
    request = ctx.request
    deidentifier = Deidentifier(
        request["body"].get("config") or {}, operation_key=bytes.fromhex(request["operation_key"])
    )
    paths = lro.selection_paths(ctx)
    scope = request.get("scope", {})
    after, through = lro.item_range(ctx)
    service = ctx.service
    rows = iter_selected(service.index.connect, source_pk, scope, paths, after, through)
    with _executor(int(ctx.payload["count"])) as pool:
        pipeline = _Pipeline(deidentifier, pool)
        window: list[tuple[Any, bytes | None, Future[bytes] | bytes | Exception]] = []
        for row in rows:
            window.append((row, *pipeline.submit(service, row)))
            # Two batches in flight: the pool works on one while the other is stored.
            if len(window) >= 2 * _WINDOW:
                _store(ctx, pipeline, destination_pk, window[:_WINDOW])
                del window[:_WINDOW]
        if window:
            _store(ctx, pipeline, destination_pk, window)


DEIDENTIFY_METHOD = ItemizedMethod(
    plan=plan_deidentify,
    run_item=deidentify_item,
    response={"@type": DEIDENTIFY_DICOM_STORE_SUMMARY},
)


class _Pipeline:
    """De-identification on the process pool if there is one, in this thread otherwise, and
    in this thread from the moment the pool breaks (a worker killed, or a main module that
    cannot be re-imported by forkserver children): a broken pool must not fail instances."""

    def __init__(self, deidentifier: Deidentifier, pool: Executor | None) -> None:
        self.deidentifier = deidentifier
        self.pool = pool

    def submit(
        self, service: Any, row: Any
    ) -> tuple[bytes | None, Future[bytes] | bytes | Exception]:
        try:
            with service.blobs.open(row.blob_key) as file:
                data = file.read()
        except OSError as exc:
            return None, exc
        if self.pool is not None:
            try:
                return data, self.pool.submit(deidentify_bytes, self.deidentifier, data)
            except BrokenExecutor:
                self._broken()
        return data, self._inline(data)

    def result(
        self, data: bytes | None, outcome: Future[bytes] | bytes | Exception
    ) -> bytes | Exception:
        if not isinstance(outcome, Future):
            return outcome
        try:
            return outcome.result()
        except BrokenExecutor:
            self._broken()
            assert data is not None
            return self._inline(data)
        except _ERRORS as exc:
            return exc

    def _inline(self, data: bytes) -> bytes | Exception:
        try:
            return deidentify_bytes(self.deidentifier, data)
        except _ERRORS as exc:
            return exc

    def _broken(self) -> None:
        if self.pool is not None:
            log.warning("the de-identification process pool broke; continuing in one thread")
        self.pool = None


def _store(
    ctx: ItemContext,
    pipeline: _Pipeline,
    destination_pk: int,
    batch: list[tuple[Any, bytes | None, Future[bytes] | bytes | Exception]],
) -> None:
    """Store a batch of de-identified instances in one index transaction, then report it
    (cancellation takes effect here, between batches)."""
    outputs: list[bytes] = []
    failures = 0
    for row, source, outcome in batch:
        data = pipeline.result(source, outcome)
        if isinstance(data, Exception):
            log.warning("de-identifying %s failed: %s", row.sop_instance_uid, data)
            failures += 1
        else:
            outputs.append(data)
    service = ctx.service
    shortage = service.config.space_shortage()
    if shortage is not None:  # below the free-space floor: refused as STOW and import are
        ctx.progress(failure=len(batch), checkpoint=batch[-1][0].pk)
        raise OperationFailedError(Code.RESOURCE_EXHAUSTED, shortage)
    # Streamed to the destination's streamConfigs, but not published: Google lists no
    # de-identification notifications (docs/notifications.md).
    try:
        results = store_instances(
            service.index, service.blobs, destination_pk, outputs, action=events.DEIDENTIFY
        )
    except StoreNotFound as exc:  # the destination was deleted meanwhile
        raise OperationFailedError(
            Code.NOT_FOUND, f"DICOM store {ctx.request['body']['destinationStore']} not found."
        ) from exc
    stored = sum(result.ok for result in results)
    ctx.progress(
        success=stored, failure=failures + len(results) - stored, checkpoint=batch[-1][0].pk
    )
