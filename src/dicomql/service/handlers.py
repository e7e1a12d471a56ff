"""The worker pool's default handler table: the long-running method each api method name
(``google_api``) runs in the embedded service."""

from __future__ import annotations

from dicomql.google_api import (
    DEIDENTIFY_DICOM_STORE,
    EXPORT_DICOM_DATA,
    IMPORT_DICOM_DATA,
    SET_BLOB_STORAGE_SETTINGS,
)
from dicomql.service import deidentify, exporter, importer, store_methods
from dicomql.service.workers import Handler


def default_handlers() -> dict[str, Handler]:
    """The handler of every long-running method the embedded service runs."""
    # Import, export and deidentify are split into work items that every server's workers
    # claim; setBlobStorageSettings changes index rows only (thousands a second) and runs whole.
    return {
        IMPORT_DICOM_DATA: importer.IMPORT_METHOD,
        EXPORT_DICOM_DATA: exporter.EXPORT_METHOD,
        SET_BLOB_STORAGE_SETTINGS: store_methods.run_set_blob_storage_settings,
        DEIDENTIFY_DICOM_STORE: deidentify.DEIDENTIFY_METHOD,
    }
