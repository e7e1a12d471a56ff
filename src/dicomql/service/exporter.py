"""The ``dicomStores.export`` handler: each selected instance is written to
``{uriPrefix}/{study}/{series}/{instance}.dcm`` (overwriting), byte for byte as stored, or
transcoded when ``mimeType`` names a transfer syntax (GoogleCloudHealthcareV1DicomGcsDestination).
"""

from __future__ import annotations

import io
import logging
from typing import Any

from dicomql.dicom.transcode import TranscodeError, transcode
from dicomql.service.bigquery_local import run_bigquery_export
from dicomql.service.lro import (
    RESPONSE_TYPE,
    count_selected,
    iter_selected,
    join_uri,
    require_store_pk,
    selection_paths,
    write_uri,
)
from dicomql.service.workers import OperationContext

log = logging.getLogger("dicomql.service.export")


def target_syntax(mime_type: str | None) -> str | None:
    """The transfer syntax an export ``mimeType`` asks for; None for the stored bytes.

    Raises:
        ValueError: a media type other than ``application/dicom`` (rendered images and frames
            are not exported by the embedded service).
    """
    if not mime_type:
        return None
    media, *params = (part.strip() for part in mime_type.split(";"))
    if media.lower() != "application/dicom":
        raise ValueError(
            f'Unsupported gcsDestination.mimeType "{mime_type}": the embedded service exports'
            ' application/dicom, optionally with "; transfer-syntax=UID".'
        )
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "transfer-syntax":
            value = value.strip().strip('"')
            return None if value == "*" else value
    return None


def run_export(ctx: OperationContext) -> dict[str, Any]:
    body = ctx.request["body"]
    if body.get("bigqueryDestination"):
        # Always the local DuckDB stand-in: the embedded service has no BigQuery (issue 5).
        return run_bigquery_export(ctx)
    store_pk = require_store_pk(ctx)
    destination = body["gcsDestination"]
    prefix = destination["uriPrefix"]
    syntax = target_syntax(destination.get("mimeType"))
    paths = selection_paths(ctx)
    scope = ctx.request.get("scope", {})
    service = ctx.service
    # The checkpoint is the last instance primary key written; instances come in key order.
    after = int(ctx.checkpoint or 0)
    with service.index.connect() as conn:
        ctx.set_pending(count_selected(conn, store_pk, scope, paths, after))
    for row in iter_selected(service.index.connect, store_pk, scope, paths, after):
        uri = join_uri(
            prefix, row.study_instance_uid, row.series_instance_uid, f"{row.sop_instance_uid}.dcm"
        )
        try:
            with service.blobs.open(row.blob_key) as file:
                if syntax is None or syntax == row.transfer_syntax_uid:
                    data = file.read()
                else:
                    data = transcode(io.BytesIO(file.read()), syntax)
            write_uri(uri, data)
        except (OSError, TranscodeError) as exc:
            log.warning("export of %s to %s failed: %s", row.sop_instance_uid, uri, exc)
            ctx.progress(failure=1, checkpoint=row.pk)
            continue
        ctx.progress(success=1, checkpoint=row.pk)
    return {"@type": RESPONSE_TYPE + "dicom.ExportDicomDataResponse"}
