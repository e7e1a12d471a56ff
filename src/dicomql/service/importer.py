"""The ``dicomStores.import`` handler: every file ``gcsSource.uri`` names is stored like a STOW
part; duplicates are ignored (never overwritten) and unreadable files counted as failures."""

from __future__ import annotations

import logging
from typing import Any

from dicomql.service.ingest import ingest_bytes
from dicomql.service.lro import NOT_FOUND, expand_uri, read_uri, require_store_pk
from dicomql.service.workers import OperationContext, OperationFailedError

log = logging.getLogger("dicomql.service.import")


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
    for number in range(start, len(files)):
        name = files[number]
        try:
            data = read_uri(name)
        except OSError as exc:
            log.warning("import of %s: cannot read %s: %s", ctx.request["store"], name, exc)
            ctx.progress(failure=1, checkpoint=number + 1)
            continue
        result = ingest_bytes(
            service.index, service.blobs, store_pk, data, storage_class=storage_class
        )
        if not result.ok:
            log.warning("import of %s: %s not stored: %s", ctx.request["store"], name, result.message)
        ctx.progress(
            success=int(result.ok), failure=int(not result.ok), checkpoint=number + 1
        )
    return {"@type": "type.googleapis.com/google.cloud.healthcare.v1.dicom.ImportDicomDataResponse"}
