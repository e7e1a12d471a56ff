"""Request-value rules the Cloud Healthcare API enforces: resource IDs, labels, field masks."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping

from dicomql.service.errors import InvalidArgument

# Cloud Healthcare: dataset and DICOM store IDs match [\p{L}\p{N}_\-\.]{1,256}
# (discovery document, datasets.create datasetId).
MAX_RESOURCE_ID = 256
# Cloud Healthcare "Using resource labels": at most 64 labels; keys 1-63 characters and at most
# 128 bytes of UTF-8; values 0-63 characters of lowercase letters, international characters,
# digits, underscores and dashes; keys start with a lowercase letter or international character.
MAX_LABELS = 64
MAX_LABEL_CHARS = 63
MAX_LABEL_BYTES = 128


def _is_id_character(character: str) -> bool:
    return character in "_-." or unicodedata.category(character)[0] in "LN"


def _is_label_start(character: str) -> bool:
    # \p{Ll} (lowercase letter) or \p{Lo} (an "international" letter with no case, e.g. 日).
    return unicodedata.category(character) in ("Ll", "Lo")


def _is_label_character(character: str) -> bool:
    return character in "_-" or unicodedata.category(character) in ("Ll", "Lo", "Nd", "Nl", "No")


def validate_resource_id(value: str | None, parameter: str) -> str:
    """Check a dataset or DICOM store ID given as the ``parameter`` query parameter.

    Raises:
        InvalidArgument: the ID is missing, too long, or has a character outside
            ``[\\p{L}\\p{N}_\\-\\.]``.
    """
    if not value:
        raise InvalidArgument(f"{parameter} is required.")
    if len(value) > MAX_RESOURCE_ID or not all(_is_id_character(c) for c in value):
        raise InvalidArgument(
            f'Invalid {parameter} "{value}": it must be 1 to {MAX_RESOURCE_ID} characters of'
            r" letters, digits, '_', '-' and '.' (regex [\p{L}\p{N}_\-\.]{1,256})."
        )
    return value


def validate_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Check a DicomStore's labels against Google's label rules.

    Raises:
        InvalidArgument: naming the first label that breaks a rule, and the rule.
    """
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(
            f"Too many labels: {len(labels)} given, at most {MAX_LABELS} are allowed."
        )
    for key, value in labels.items():
        _validate_label_key(key)
        _validate_label_value(key, value)
    return dict(labels)


def _validate_label_key(key: str) -> None:
    if not key or len(key) > MAX_LABEL_CHARS or len(key.encode()) > MAX_LABEL_BYTES:
        raise InvalidArgument(
            f'Invalid label key "{key}": keys must be 1 to {MAX_LABEL_CHARS} characters and at'
            f" most {MAX_LABEL_BYTES} bytes of UTF-8."
        )
    if not _is_label_start(key[0]):
        raise InvalidArgument(
            f'Invalid label key "{key}": keys must start with a lowercase letter or an'
            " international character."
        )
    if not all(_is_label_character(c) for c in key):
        raise InvalidArgument(
            f'Invalid label key "{key}": keys may contain only lowercase letters, international'
            " characters, digits, '_' and '-'."
        )


def _validate_label_value(key: str, value: str) -> None:
    if len(value) > MAX_LABEL_CHARS or len(value.encode()) > MAX_LABEL_BYTES:
        raise InvalidArgument(
            f'Invalid value for label "{key}": values must be at most {MAX_LABEL_CHARS}'
            f" characters and {MAX_LABEL_BYTES} bytes of UTF-8."
        )
    if not all(_is_label_character(c) for c in value):
        raise InvalidArgument(
            f'Invalid value "{value}" for label "{key}": values may contain only lowercase'
            " letters, international characters, digits, '_' and '-'."
        )


def snake_case(name: str) -> str:
    """``notificationConfigs`` → ``notification_configs`` (the proto field name)."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def parse_update_mask(raw: str | None, updatable: Iterable[str]) -> list[str]:
    """The paths of a google.protobuf.FieldMask, as the resource's JSON (camelCase) names.

    Paths may be given in proto (snake_case) or JSON (camelCase) spelling, comma-separated.
    The Healthcare API documents ``updateMask`` as required on every patch, so an empty mask is
    an error rather than "update everything".

    Raises:
        InvalidArgument: the mask is missing or names a path that cannot be updated.
    """
    fields = {snake_case(name): name for name in updatable}
    fields.update({name: name for name in updatable})
    if raw is None or not raw.strip():
        raise InvalidArgument(
            "updateMask is required; name the fields to update, e.g."
            f" updateMask={','.join(sorted(set(fields.values())))}."
        )
    paths: list[str] = []
    for part in raw.split(","):
        path = part.strip()
        if path not in fields:
            raise InvalidArgument(
                f'Invalid update_mask path "{path}": the fields that can be updated are'
                f" {', '.join(sorted(set(fields.values())))}."
            )
        if fields[path] not in paths:
            paths.append(fields[path])
    return paths


def validate_path_ids(path_params: Mapping[str, str]) -> None:
    """Check the IDs in a request's resource name before they reach the index.

    Projects and locations are not otherwise constrained by the embedded service, but every ID
    is stored in a 256-character column, and PostgreSQL refuses NUL in text, so a longer ID or a
    control character is bad input (400) rather than a database error.

    Raises:
        InvalidArgument: naming the offending path segment.
    """
    for name, value in path_params.items():
        if len(value) > MAX_RESOURCE_ID or any(unicodedata.category(c) == "Cc" for c in value):
            shown = value[:40].encode("unicode_escape").decode() + ("…" if len(value) > 40 else "")
            raise InvalidArgument(
                f'Invalid {name} ID "{shown}" in the resource name: IDs are at most'
                f" {MAX_RESOURCE_ID} characters, without control characters."
            )


def dataset_path(path_params: Mapping[str, str]) -> tuple[str, str, str]:
    """The project, location and dataset a request's path names, checked
    (:func:`validate_path_ids`)."""
    validate_path_ids(path_params)
    return path_params["project"], path_params["location"], path_params["dataset"]
