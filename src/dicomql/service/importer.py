"""The ``dicomStores.import`` handler: every file ``gcsSource.uri`` names is stored like a STOW
part; duplicates are ignored (never overwritten) and unreadable files counted as failures."""

from __future__ import annotations

import logging
from typing import Any

from dicomql.service.ingest import ingest_many
from dicomql.service.lro import NOT_FOUND, RESPONSE_TYPE, expand_uri, read_uri, require_store_pk
from dicomql.service.workers import OperationContext, OperationFailedError

log = logging.getLogger("dicomql.service.import")

# Files stored per index transaction (group commit); cancellation takes effect between batches.
_BATCH = 16


def run_import(ctx: OperationContext) -> dict[str, Any]:
    store_pk = require_store_pk(ctx)
    body = ctx.request["body"]
    uri = body["gcsSource"]["uri"]
    storage_class = (body.get("blobStorageSettings") or {}).get("blobStorageClass")
    files = expand_uri(uri)
    if not files:
        raise OperationFailedError(NOT_FOUND, f"No files match {uri}.")
    # The checkpoint is how many files (in sorted order) are done; a resumed import skips them
    # (storing them again would only find duplicates, but costs the parse).
    start = int(ctx.checkpoint or 0)
    ctx.set_pending(len(files) - start)
    service = ctx.service
    for first in range(start, len(files), _BATCH):
        names = files[first : first + _BATCH]
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
        ctx.progress(
            success=stored,
            failure=len(names) - stored,
            checkpoint=first + len(names),
        )
    return {"@type": RESPONSE_TYPE + "dicom.ImportDicomDataResponse"}
