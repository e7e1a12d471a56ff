"""The ``dicomStores.import`` handler: every file ``gcsSource.uri`` names is stored like a STOW
part; duplicates are ignored (never overwritten) and unreadable files counted as failures.

The import is split into work items of :data:`FILES_PER_ITEM` source files that any server's
workers run. Storing a file again finds the identical instance and counts it a success without
writing it, so an item re-run after its worker died is idempotent."""

from __future__ import annotations

import logging
from typing import Any

from dicomql.google_api import IMPORT_DICOM_DATA_RESPONSE, Code
from dicomql.service.local_files import LocalFileRefused
from dicomql.service.lro import require_store_pk
from dicomql.service.uris import expand_uri, read_uri
from dicomql.service.workers import (
    ItemContext,
    ItemizedMethod,
    OperationContext,
    OperationFailedError,
)
from dicomql.store.ingest import store_instances
from dicomql.store.instances import StoreNotFound

log = logging.getLogger("dicomql.service.import")

# Files stored per index transaction (group commit); cancellation takes effect between batches.
_BATCH = 16
# Source files per work item: one batch, a fraction of a second of one core's work on CT-sized
# files, so even an import of a few hundred files spreads over every server and a server that
# dies leaves little to redo; the per-item cost (a claim and a completion transaction, a few
# milliseconds) stays small beside parsing and indexing 16 instances.
FILES_PER_ITEM = _BATCH


# Bytes of source files held in memory at once: a batch is stored early once its files reach
# this, so sixteen large files (whole-slide images) do not sit in memory together.
_BATCH_BYTES = 64 * 1024 * 1024


def plan_import(ctx: OperationContext) -> list[dict[str, Any]]:
    require_store_pk(ctx)
    uri = ctx.request["body"]["gcsSource"]["uri"]
    try:
        files = expand_uri(uri, ctx.service.config)
    except LocalFileRefused as exc:
        raise OperationFailedError(exc.code, str(exc)) from exc
    if not files:
        raise OperationFailedError(Code.NOT_FOUND, f"No files match {uri}.")
    # An operation a previous version ran whole has a checkpoint: how many files (in sorted
    # order) it finished. Those are not planned again.
    start = int(ctx.checkpoint or 0)
    remaining = files[start:]
    slices = [
        remaining[first : first + FILES_PER_ITEM]
        for first in range(0, len(remaining), FILES_PER_ITEM)
    ]
    return [{"files": names, "count": len(names)} for names in slices]


def import_item(ctx: ItemContext) -> None:
    store_pk = require_store_pk(ctx)
    body = ctx.request["body"]
    storage_class = (body.get("blobStorageSettings") or {}).get("blobStorageClass")
    files: list[str] = ctx.payload["files"]
    # The item's checkpoint is how many of its files are done (and counted).
    done = int(ctx.checkpoint or 0)
    service = ctx.service
    store = ctx.request["store"]
    while done < len(files):
        shortage = service.config.space_shortage()
        if shortage is not None:
            # Counted, then the operation ends with the reason: retrying later, once space is
            # freed, imports what is missing (duplicates are ignored).
            ctx.progress(failure=len(files) - done, checkpoint=len(files))
            raise OperationFailedError(Code.RESOURCE_EXHAUSTED, shortage)
        readable: list[bytes] = []
        taken = 0
        held = 0
        for name in files[done : done + _BATCH]:
            taken += 1
            try:
                data = read_uri(name, service.config)
            except (OSError, LocalFileRefused) as exc:
                log.warning("import into %s: not read: %s", store, _reason(name, exc))
                continue
            readable.append(data)
            held += len(data)
            if held >= _BATCH_BYTES:
                break
        try:
            results = store_instances(
                service.index, service.blobs, store_pk, readable, storage_class=storage_class
            )
        except StoreNotFound as exc:  # deleted meanwhile
            raise OperationFailedError(Code.NOT_FOUND, f"DICOM store {store} not found.") from exc
        stored = sum(result.ok for result in results)
        done += taken
        ctx.progress(success=stored, failure=taken - stored, checkpoint=done)


def _reason(name: str, exc: Exception) -> str:
    if isinstance(exc, OSError):
        # Not str(exc): only the system's reason and the name the request gave.
        return f"{name}: {exc.strerror or type(exc).__name__}"
    return str(exc)


IMPORT_METHOD = ItemizedMethod(
    plan=plan_import,
    run_item=import_item,
    response={"@type": IMPORT_DICOM_DATA_RESPONSE},
)
