"""The ``dicomStores.import`` handler: every file ``gcsSource.uri`` names is stored like a STOW
part; duplicates are ignored (never overwritten) and unreadable files counted as failures.

The import is split into work items of :data:`FILES_PER_ITEM` source files that any server's
workers run. Storing a file again finds the identical instance and counts it a success without
writing it, so an item re-run after its worker died is idempotent."""

from __future__ import annotations

import logging
from typing import Any

from dicomql.service.ingest import ingest_many
from dicomql.service.lro import (
    NOT_FOUND,
    RESOURCE_EXHAUSTED,
    RESPONSE_TYPE,
    expand_uri,
    read_uri,
    require_store_pk,
)
from dicomql.service.workers import (
    ItemContext,
    ItemizedMethod,
    OperationContext,
    OperationFailedError,
)

log = logging.getLogger("dicomql.service.import")

# Files stored per index transaction (group commit); cancellation takes effect between batches.
_BATCH = 16
# Source files per work item: one batch, a fraction of a second of one core's work on CT-sized
# files, so even an import of a few hundred files spreads over every server and a server that
# dies leaves little to redo; the per-item cost (a claim and a completion transaction, a few
# milliseconds) stays small beside parsing and indexing 16 instances.
FILES_PER_ITEM = _BATCH


def plan_import(ctx: OperationContext) -> list[dict[str, Any]]:
    require_store_pk(ctx)
    uri = ctx.request["body"]["gcsSource"]["uri"]
    files = expand_uri(uri)
    if not files:
        raise OperationFailedError(NOT_FOUND, f"No files match {uri}.")
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
    start = int(ctx.checkpoint or 0)
    service = ctx.service
    for first in range(start, len(files), _BATCH):
        names = files[first : first + _BATCH]
        shortage = service.config.space_shortage()
        if shortage is not None:
            # Counted, then the operation ends with the reason: retrying later, once space is
            # freed, imports what is missing (duplicates are ignored).
            ctx.progress(failure=len(files) - first, checkpoint=len(files))
            raise OperationFailedError(RESOURCE_EXHAUSTED, shortage)
        readable: list[bytes] = []
        for name in names:
            try:
                readable.append(read_uri(name))
            except OSError as exc:
                log.warning("import into %s: cannot read %s: %s", ctx.request["store"], name, exc)
        results = ingest_many(
            service.index, service.blobs, store_pk, readable, storage_class=storage_class
        )
        for result in results:
            if not result.ok:
                log.warning("import into %s: not stored: %s", ctx.request["store"], result.message)
        stored = sum(result.ok for result in results)
        ctx.progress(success=stored, failure=len(names) - stored, checkpoint=first + len(names))


IMPORT_METHOD = ItemizedMethod(
    plan=plan_import,
    run_item=import_item,
    response={"@type": RESPONSE_TYPE + "dicom.ImportDicomDataResponse"},
)
