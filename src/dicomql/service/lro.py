"""The long-running DICOM store methods' shared parts (their api method names are
``google_api``'s): their storage classes, and what a request selects (the resource paths of
``DicomFilterConfig.resourcePathsGcsUri``, a work item's key range). The handler table is
``service.handlers``, URIs ``service.uris``, the selection's SQL ``store.selections``."""

from __future__ import annotations

import re

from dicomql.dicom.uids import uid_problem
from dicomql.google_api import Code
from dicomql.service.config import ServiceConfig
from dicomql.service.local_files import LocalFileRefused
from dicomql.service.uris import read_uri
from dicomql.service.workers import ItemContext, OperationFailedError, WorkContext
from dicomql.store.resources import dicom_store_exists
from dicomql.store.selections import ResourcePath

STORAGE_CLASSES = ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE")

# A filter file lists resource paths, about 150 bytes a line: 64 MiB is some 400,000 lines.
FILTER_FILE_MAX_BYTES = 64 * 1024 * 1024


# --- selections (their SQL is store.selections') -----------------------------------------


def read_resource_paths(uri: str, config: ServiceConfig) -> list[ResourcePath]:
    """The ``/studies/{s}[/series/{se}[/instances/{i}]]`` lines of a filter file.

    Raises:
        OperationFailedError: INVALID_ARGUMENT for a line of another form, NOT_FOUND for a
            missing file, PERMISSION_DENIED for a file the service may not read.
    """
    try:
        text = read_uri(uri, config, FILTER_FILE_MAX_BYTES).decode("utf-8")
    except LocalFileRefused as exc:
        raise OperationFailedError(exc.code, f"filterConfig: {exc}") from exc
    except FileNotFoundError as exc:
        raise OperationFailedError(Code.NOT_FOUND, f"filterConfig file {uri} not found.") from exc
    except OSError as exc:
        raise OperationFailedError(
            Code.FAILED_PRECONDITION, f"filterConfig file {uri} cannot be read: {exc.strerror}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise OperationFailedError(Code.INVALID_ARGUMENT, f"{uri} is not UTF-8 text.") from exc
    paths = []
    # Errors name the line by number, never by content: the file may not be the filter file
    # the request claims it is, and its contents are not the requester's to see.
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        match = re.fullmatch(r"/studies/([^/]+)(?:/series/([^/]+)(?:/instances/([^/]+))?)?", line)
        if match is None:
            raise OperationFailedError(
                Code.INVALID_ARGUMENT,
                f"Line {number} of {uri} is not a resource path of the form"
                " /studies/{study}[/series/{series}[/instances/{instance}]].",
            )
        if any(uid is not None and uid_problem(uid) for uid in match.groups()):
            raise OperationFailedError(
                Code.INVALID_ARGUMENT, f"Line {number} of {uri} names an invalid UID (PS3.5 9.1)."
            )
        paths.append((match[1], match[2], match[3]))
    return paths


def item_range(ctx: ItemContext) -> tuple[int, int]:
    """Where a range work item (re)starts (its checkpoint, the last instance key it reported
    done, or the start of its range) and where it ends."""
    payload = ctx.payload
    return max(int(payload["after"]), int(ctx.checkpoint or 0)), int(payload["through"])


def require_store_pk(ctx: WorkContext) -> int:
    """The store the operation works on, which may have been deleted since it started."""
    pk: int = ctx.request["store_pk"]
    with ctx.service.index.connect() as conn:
        found = dicom_store_exists(conn, pk)
    if not found:
        raise OperationFailedError(Code.NOT_FOUND, f"DICOM store {ctx.request['store']} not found.")
    return pk


def selection_paths(ctx: WorkContext) -> list[ResourcePath] | None:
    uri = (ctx.request.get("body", {}).get("filterConfig") or {}).get("resourcePathsGcsUri")
    return read_resource_paths(uri, ctx.service.config) if uri else None
