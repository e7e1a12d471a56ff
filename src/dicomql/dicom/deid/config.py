"""Validation of Cloud Healthcare's ``DeidentifyConfig`` JSON (its ``dicom``, ``text`` and
``image`` parts) into immutable options the de-identification engine runs on.

Every problem raises :class:`DeidentifyConfigError` (a ``ValueError``) whose message names the
offending field, so the service can return it as a 400 INVALID_ARGUMENT as Google does.
"""

from __future__ import annotations

import base64
import binascii
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import tag_for_keyword

FILTER_PROFILES = frozenset(
    {
        "TAG_FILTER_PROFILE_UNSPECIFIED",
        "MINIMAL_KEEP_LIST_PROFILE",
        "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
        "KEEP_ALL_PROFILE",
        "DEIDENTIFY_TAG_CONTENTS",
    }
)
TEXT_REDACTION_MODES = frozenset(
    {
        "TEXT_REDACTION_MODE_UNSPECIFIED",
        "REDACT_ALL_TEXT",
        "REDACT_SENSITIVE_TEXT",
        "REDACT_NO_TEXT",
    }
)
# InfoTypeTransformation's one-of, and the short names the engine uses for them.
TRANSFORMATION_FIELDS = {
    "redactConfig": "redact",
    "characterMaskConfig": "mask",
    "replaceWithInfoTypeConfig": "replace",
    "cryptoHashConfig": "hash",
    "dateShiftConfig": "date_shift",
}
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


class DeidentifyConfigError(ValueError):
    """The DeidentifyConfig is invalid; the message says which field and why."""


class UnsupportedDeidentifyConfigError(DeidentifyConfigError):
    """The DeidentifyConfig is valid for Google but asks for something dicomql cannot do here
    (KMS-wrapped keys, a config in Cloud Storage, OCR without Tesseract installed)."""


@dataclass(frozen=True)
class Transformation:
    """One InfoTypeTransformation.

    Attributes:
        kind: ``redact``, ``mask``, ``replace``, ``hash`` or ``date_shift``.
        info_types: the infoTypes it applies to; empty means any.
        masking_character: for ``mask``.
        crypto_key: for ``hash`` and ``date_shift``; None means the operation's own key.
    """

    kind: str
    info_types: frozenset[str] = frozenset()
    masking_character: str = "*"
    crypto_key: bytes | None = None

    def applies_to(self, info_type: str) -> bool:
        if self.info_types and info_type not in self.info_types:
            return False
        # Date shifting only means something for dates (DLP: DateShiftConfig on DATE values).
        return self.kind != "date_shift" or info_type == "DATE"


@dataclass(frozen=True)
class DeidentifyOptions:
    """A validated DeidentifyConfig as far as DICOM is concerned.

    Attributes:
        filter_profile: one of FILTER_PROFILES minus UNSPECIFIED (which means KEEP_ALL_PROFILE),
            or ``KEEP_LIST`` / ``REMOVE_LIST`` when ``keepList`` / ``removeList`` was given.
        tags: the tags of ``keepList`` or ``removeList``.
        skip_id_redaction: keep UIDs as they are.
        transformations: TextConfig ``transformations`` then ``additionalTransformations``.
        exclude_info_types: infoTypes never transformed.
        text_redaction_mode: ImageConfig's, REDACT_NO_TEXT unless given.
        custom_regexes: ImageConfig's, as (pattern, group indexes); they extend what
            REDACT_SENSITIVE_TEXT blanks.
    """

    filter_profile: str = "KEEP_ALL_PROFILE"
    tags: frozenset[int] = frozenset()
    skip_id_redaction: bool = False
    transformations: tuple[Transformation, ...] = ()
    exclude_info_types: frozenset[str] = frozenset()
    text_redaction_mode: str = "REDACT_NO_TEXT"
    custom_regexes: tuple[tuple[re.Pattern[str], tuple[int, ...]], ...] = ()


def parse_config(config: Any) -> DeidentifyOptions:
    """Validate a DeidentifyConfig (the ``config`` of a DeidentifyDicomStoreRequest).

    >>> parse_config({"dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"}}
    ...              ).filter_profile
    'ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE'

    Raises:
        DeidentifyConfigError: the config is malformed.
        UnsupportedDeidentifyConfigError: the config needs what dicomql does not implement.
    """
    config = _object(config, "config")
    _known_fields(config, "config", {"dicom", "fhir", "image", "text", "useRegionalDataProcessing"})
    if "useRegionalDataProcessing" in config:
        _boolean(config["useRegionalDataProcessing"], "config.useRegionalDataProcessing")
    options: dict[str, Any] = {}
    options.update(_parse_dicom(_object(config.get("dicom", {}), "config.dicom")))
    options.update(_parse_text(_object(config.get("text", {}), "config.text")))
    options.update(_parse_image(_object(config.get("image", {}), "config.image")))
    return DeidentifyOptions(**options)


def parse_tag(name: Any, where: str) -> int:
    """A tag given as a keyword (``PatientID``) or eight hex digits (``00100020``)."""
    if not isinstance(name, str):
        raise DeidentifyConfigError(f"{where}: a tag must be a string, got {name!r}")
    if _HEX_TAG.match(name):
        return int(name, 16)
    tag = tag_for_keyword(name)
    if tag is None:
        raise DeidentifyConfigError(
            f"{where}: {name!r} is neither a DICOM keyword nor a tag of eight hex digits"
        )
    return tag


def _parse_dicom(dicom: Mapping[str, Any]) -> dict[str, Any]:
    _known_fields(
        dicom, "config.dicom", {"filterProfile", "keepList", "removeList", "skipIdRedaction"}
    )
    given = [field for field in ("filterProfile", "keepList", "removeList") if field in dicom]
    if len(given) > 1:
        raise DeidentifyConfigError(
            "config.dicom: only one of filterProfile, keepList and removeList may be set,"
            f" got {', '.join(given)}"
        )
    options: dict[str, Any] = {}
    if "skipIdRedaction" in dicom:
        options["skip_id_redaction"] = _boolean(
            dicom["skipIdRedaction"], "config.dicom.skipIdRedaction"
        )
    if "filterProfile" in dicom:
        profile = dicom["filterProfile"]
        if profile not in FILTER_PROFILES:
            raise DeidentifyConfigError(
                f"config.dicom.filterProfile: {profile!r} is not one of"
                f" {', '.join(sorted(FILTER_PROFILES))}"
            )
        if profile == "TAG_FILTER_PROFILE_UNSPECIFIED":
            profile = "KEEP_ALL_PROFILE"
        options["filter_profile"] = profile
    for field, profile in (("keepList", "KEEP_LIST"), ("removeList", "REMOVE_LIST")):
        if field in dicom:
            where = f"config.dicom.{field}"
            tag_list = _object(dicom[field], where)
            _known_fields(tag_list, where, {"tags"})
            names = _list(tag_list.get("tags", []), f"{where}.tags")
            options["filter_profile"] = profile
            options["tags"] = frozenset(
                parse_tag(name, f"{where}.tags[{n}]") for n, name in enumerate(names)
            )
    return options


def _parse_text(text: Mapping[str, Any]) -> dict[str, Any]:
    _known_fields(
        text, "config.text", {"transformations", "additionalTransformations", "excludeInfoTypes"}
    )
    transformations: list[Transformation] = []
    for field in ("transformations", "additionalTransformations"):
        for n, item in enumerate(_list(text.get(field, []), f"config.text.{field}")):
            transformations.append(_parse_transformation(item, f"config.text.{field}[{n}]"))
    exclude = _list(text.get("excludeInfoTypes", []), "config.text.excludeInfoTypes")
    return {
        "transformations": tuple(transformations),
        "exclude_info_types": frozenset(_info_types(exclude, "config.text.excludeInfoTypes")),
    }


def _parse_transformation(item: Any, where: str) -> Transformation:
    item = _object(item, where)
    _known_fields(item, where, {"infoTypes", *TRANSFORMATION_FIELDS})
    chosen = [field for field in TRANSFORMATION_FIELDS if field in item]
    if len(chosen) != 1:
        raise DeidentifyConfigError(
            f"{where}: exactly one of {', '.join(TRANSFORMATION_FIELDS)} must be set"
            + (f", got {', '.join(chosen)}" if chosen else "")
        )
    field = chosen[0]
    body = _object(item[field], f"{where}.{field}")
    info_types = frozenset(
        _info_types(_list(item.get("infoTypes", []), f"{where}.infoTypes"), f"{where}.infoTypes")
    )
    kind = TRANSFORMATION_FIELDS[field]
    if kind == "mask":
        _known_fields(body, f"{where}.{field}", {"maskingCharacter"})
        character = body.get("maskingCharacter", "") or "*"
        if not isinstance(character, str) or len(character) != 1 or character == "\\":
            raise DeidentifyConfigError(
                f"{where}.{field}.maskingCharacter: must be one character other than a"
                f" backslash (the DICOM value delimiter), got {character!r}"
            )
        return Transformation(kind, info_types, masking_character=character)
    if kind in ("hash", "date_shift"):
        _known_fields(body, f"{where}.{field}", {"cryptoKey", "kmsWrapped"})
        return Transformation(kind, info_types, crypto_key=_crypto_key(body, f"{where}.{field}"))
    _known_fields(body, f"{where}.{field}", set())
    return Transformation(kind, info_types)


def _crypto_key(body: Mapping[str, Any], where: str) -> bytes | None:
    if "cryptoKey" in body and "kmsWrapped" in body:
        raise DeidentifyConfigError(f"{where}: cryptoKey and kmsWrapped are mutually exclusive")
    if "kmsWrapped" in body:
        raise UnsupportedDeidentifyConfigError(
            f"{where}.kmsWrapped: KMS-wrapped keys need Cloud KMS, which the embedded service"
            " does not have; give cryptoKey instead"
        )
    if "cryptoKey" not in body:
        return None
    encoded = body["cryptoKey"]
    if not isinstance(encoded, str):
        raise DeidentifyConfigError(f"{where}.cryptoKey: must be a base64 string")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        try:  # JSON "bytes" may also arrive URL-safe encoded (proto3 JSON mapping)
            key = base64.urlsafe_b64decode(encoded)
        except (binascii.Error, ValueError):
            raise DeidentifyConfigError(f"{where}.cryptoKey: not valid base64") from exc
    if len(key) not in (16, 24, 32):
        raise DeidentifyConfigError(
            f"{where}.cryptoKey: must be an AES 128, 192 or 256 bit key, got {len(key) * 8} bits"
        )
    return key


def _parse_image(image: Mapping[str, Any]) -> dict[str, Any]:
    _known_fields(image, "config.image", {"textRedactionMode", "customRegexes"})
    mode = image.get("textRedactionMode", "REDACT_NO_TEXT")
    if mode not in TEXT_REDACTION_MODES:
        raise DeidentifyConfigError(
            f"config.image.textRedactionMode: {mode!r} is not one of"
            f" {', '.join(sorted(TEXT_REDACTION_MODES))}"
        )
    if mode == "TEXT_REDACTION_MODE_UNSPECIFIED":
        mode = "REDACT_NO_TEXT"
    customs = []
    for n, custom in enumerate(_list(image.get("customRegexes", []), "config.image.customRegexes")):
        where = f"config.image.customRegexes[{n}]"
        custom = _object(custom, where)
        _known_fields(custom, where, {"pattern", "groupIndexes"})
        try:
            pattern = re.compile(str(custom.get("pattern", "")))
        except re.error as exc:
            raise DeidentifyConfigError(f"{where}.pattern: {exc}") from exc
        groups = _list(custom.get("groupIndexes", []), f"{where}.groupIndexes")
        for group in groups:
            if (
                not isinstance(group, int)
                or isinstance(group, bool)
                or not 0 <= group <= pattern.groups
            ):
                raise DeidentifyConfigError(
                    f"{where}.groupIndexes: {group!r} is not a group of the pattern"
                    f" (it has {pattern.groups})"
                )
        customs.append((pattern, tuple(groups)))
    if mode != "REDACT_NO_TEXT":
        require_ocr()
    return {"text_redaction_mode": mode, "custom_regexes": tuple(customs)}


def require_ocr() -> None:
    """Raise UnsupportedDeidentifyConfigError unless Tesseract and pytesseract, which OCR
    redaction (``deid/image.py``) runs on, are present: checked when the request is parsed."""
    try:
        import pytesseract  # noqa: F401
    except ImportError as exc:
        raise UnsupportedDeidentifyConfigError(
            "config.image.textRedactionMode: OCR needs the pytesseract package, which is not"
            " installed; use REDACT_NO_TEXT"
        ) from exc
    if shutil.which("tesseract") is None:
        raise UnsupportedDeidentifyConfigError(
            "config.image.textRedactionMode: OCR needs the tesseract program (Debian package"
            " tesseract-ocr), which is not installed; use REDACT_NO_TEXT"
        )


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DeidentifyConfigError(f"{where}: expected a JSON object, got {value!r}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise DeidentifyConfigError(f"{where}: expected a JSON array, got {value!r}")
    return value


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise DeidentifyConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _info_types(names: list[Any], where: str) -> list[str]:
    for name in names:
        if not isinstance(name, str) or not name:
            raise DeidentifyConfigError(f"{where}: infoTypes are non-empty strings, got {name!r}")
    return names


def _known_fields(value: Mapping[str, Any], where: str, known: set[str]) -> None:
    # Google rejects unknown fields ("Invalid JSON payload received. Unknown name …"); so do we,
    # so that a typo never silently de-identifies less than the caller asked for.
    unknown = sorted(set(value) - known)
    if unknown:
        raise DeidentifyConfigError(f"{where}: unknown field {unknown[0]!r}")


_STORE_NAME = re.compile(
    r"^projects/[^/]+/locations/[^/]+/datasets/[\w\-.]{1,256}/dicomStores/[\w\-.]{1,256}$"
)


@dataclass(frozen=True)
class DeidentifyRequest:
    """A validated DeidentifyDicomStoreRequest.

    Attributes:
        destination_store: the full name of the DICOM store to write to.
        config: the DeidentifyConfig JSON as given (store it with the operation).
        options: ``config`` validated.
        resource_paths_gcs_uri: DicomFilterConfig's file of ``/studies/…`` paths, if any.
    """

    destination_store: str
    config: Mapping[str, Any]
    options: DeidentifyOptions
    resource_paths_gcs_uri: str | None = None


def parse_request(body: Any) -> DeidentifyRequest:
    """Validate the body of ``dicomStores.deidentify``.

    Raises:
        DeidentifyConfigError: the body is malformed.
        UnsupportedDeidentifyConfigError: it needs what dicomql cannot do (``gcsConfigUri``).
    """
    body = _object(body, "request")
    _known_fields(body, "request", {"destinationStore", "config", "filterConfig", "gcsConfigUri"})
    destination = body.get("destinationStore")
    if not isinstance(destination, str) or not destination:
        raise DeidentifyConfigError("destinationStore: required")
    if not _STORE_NAME.match(destination):
        raise DeidentifyConfigError(
            "destinationStore: must be projects/{project}/locations/{location}/datasets/"
            f"{{dataset}}/dicomStores/{{dicom_store}}, got {destination!r}"
        )
    if "config" in body and "gcsConfigUri" in body:
        raise DeidentifyConfigError("only one of config and gcsConfigUri can be specified")
    if "gcsConfigUri" in body:
        raise UnsupportedDeidentifyConfigError(
            "gcsConfigUri: reading the config from Cloud Storage is not supported by the"
            " embedded service; pass it inline as config"
        )
    config = body.get("config", {})
    options = parse_config(config)
    paths_uri = None
    if "filterConfig" in body:
        filter_config = _object(body["filterConfig"], "filterConfig")
        _known_fields(filter_config, "filterConfig", {"resourcePathsGcsUri"})
        paths_uri = filter_config.get("resourcePathsGcsUri")
        if paths_uri is not None and not isinstance(paths_uri, str):
            raise DeidentifyConfigError("filterConfig.resourcePathsGcsUri: must be a string")
    return DeidentifyRequest(destination, config, options, paths_uri)
