"""The ``dicomStores.export`` handler: each selected instance is written to
``{uriPrefix}/{study}/{series}/{instance}.dcm`` (overwriting), byte for byte as stored, or
transcoded when ``mimeType`` names a transfer syntax (GoogleCloudHealthcareV1DicomGcsDestination).
Split into work items of instance key ranges that any server's workers run; a BigQuery export
runs whole (``service/bigquery_export.py``).
"""

from __future__ import annotations

import io
import logging
from typing import Any

from dicomql.dicom.transcode import TranscodeError, transcode
from dicomql.google_api import EXPORT_DICOM_DATA_RESPONSE
from dicomql.service.bigquery_export import run_bigquery_export
from dicomql.service.local_files import LocalFileRefused
from dicomql.service.lro import item_range, require_store_pk, selection_paths
from dicomql.service.prometheus import count_error
from dicomql.service.uris import check_export_prefix, export_uri, write_uri
from dicomql.service.workers import (
    ItemContext,
    ItemizedMethod,
    OperationContext,
    OperationFailedError,
)
from dicomql.store.blobs import BlobStore
from dicomql.store.selections import iter_selected, plan_ranges

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


# Instances per work item: a fraction of a second each when copying stored bytes locally.
INSTANCES_PER_ITEM = 64


def plan_export(ctx: OperationContext) -> list[dict[str, Any]] | None:
    if ctx.request["body"].get("bigqueryDestination"):
        # One BigQuery load or one local DuckDB file: runs whole on the server that claims it.
        return None
    store_pk = require_store_pk(ctx)
    try:
        check_export_prefix(ctx.request["body"]["gcsDestination"]["uriPrefix"], ctx.service.config)
    except LocalFileRefused as exc:
        raise OperationFailedError(exc.code, str(exc)) from exc
    # An operation a previous version ran whole has a checkpoint: the last instance key done.
    return plan_ranges(
        ctx.service.index.connect,
        store_pk,
        ctx.request.get("scope", {}),
        selection_paths(ctx),
        INSTANCES_PER_ITEM,
        int(ctx.checkpoint or 0),
    )


def export_item(ctx: ItemContext) -> None:
    """Write the item's instances. The destination path is a function of the instance, and
    each file is written to a temporary and renamed, so an item re-run after its worker died
    rewrites at most the files after its checkpoint with the same bytes (and counts them once:
    counters move with the checkpoint)."""
    store_pk = require_store_pk(ctx)
    destination = ctx.request["body"]["gcsDestination"]
    prefix = destination["uriPrefix"]
    syntax = target_syntax(destination.get("mimeType"))
    paths = selection_paths(ctx)
    scope = ctx.request.get("scope", {})
    service = ctx.service
    after, through = item_range(ctx)
    for row in iter_selected(service.index.connect, store_pk, scope, paths, after, through):
        uri = prefix  # named in the warning if the destination itself is refused
        try:
            uri = export_uri(
                prefix, row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid
            )
            data = _read_blob(service.blobs, row.blob_key)
            if syntax is not None and syntax != row.transfer_syntax_uid:
                data = transcode(io.BytesIO(data), syntax)
            write_uri(uri, data, service.config, prefix=prefix)
        except (OSError, TranscodeError, LocalFileRefused) as exc:
            log.warning("export of %s to %s failed: %s", row.sop_instance_uid, uri, exc)
            ctx.progress(failure=1, checkpoint=row.pk)
            continue
        ctx.progress(success=1, checkpoint=row.pk)


def _read_blob(blobs: BlobStore, key: str) -> bytes:
    """An indexed instance's blob; one the blob store cannot give (vanished, unreadable) counts
    as a blob error in ``/metrics`` before the instance is counted as a failure."""
    try:
        with blobs.open(key) as file:
            return file.read()
    except OSError as exc:
        count_error(exc)
        raise


EXPORT_METHOD = ItemizedMethod(
    plan=plan_export,
    run_item=export_item,
    response={"@type": EXPORT_DICOM_DATA_RESPONSE},
    # Real BigQuery when it is reachable, else the local DuckDB stand-in.
    whole=run_bigquery_export,
)
