"""The de-identification engine: one :class:`Deidentifier` per operation, applied to each
instance's pydicom Dataset in place.

A Deidentifier is immutable after construction, so one object is safe to share between threads,
and it pickles (its config, profile and operation key) so a process pool can ship it to workers.
What varies per instance lives in a per-call :class:`_Instance`.
"""

from __future__ import annotations

import io
import re
import secrets
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import dcmread
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from dicomql.dicom.deid import image, text
from dicomql.dicom.deid.config import DeidentifyOptions, Transformation, parse_config
from dicomql.dicom.deid.profiles import (
    Action,
    BasicProfile,
    KeepAllProfile,
    KeepListProfile,
    MinimalKeepListProfile,
    Profile,
    RemoveListProfile,
    TagContentsProfile,
)
from dicomql.dicom.deid.uids import UidMap, is_instance_uid_tag
from dicomql.dicom.transcode import decode_mislabelled

# PS3.15 E.3 placeholders for action D, valid for their VR.
_DUMMY: dict[str, Any] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "TM": "000000",
    "UC": "ANONYMIZED",
    "UR": "",
    "UT": "ANONYMIZED",
}
# The same as raw values, padded to an even length with a space (PS3.5 6.2).
_DUMMY_BYTES: dict[str, bytes] = {
    vr: (value + " " * (len(value) % 2)).encode("ascii") for vr, value in _DUMMY.items()
}
_NUMERIC_VRS = frozenset({"FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "AT"})
_DEFAULT_TRANSFORMATION = Transformation("replace")
_PATIENT_ID = BaseTag(0x00100020)
_STUDY_INSTANCE_UID = BaseTag(0x0020000D)
_SOP_INSTANCE_UID = BaseTag(0x00080018)
_PIXEL_DATA = BaseTag(0x7FE00010)
# File Meta Information about the writer of the original file: Implementation Class UID and
# Version Name, Source / Sending / Receiving AE Title, Private Information Creator UID and
# Private Information.
_WRITER_META = tuple(
    BaseTag(tag)
    for tag in (0x00020012, 0x00020013, 0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)
)
# Values whose appearance in burned-in text is sensitive (REDACT_SENSITIVE_TEXT).
_IDENTIFIER_TAGS = tuple(
    BaseTag(tag)
    for tag in (0x00100020, 0x00101000, 0x00080050, 0x00080080, 0x00081040, 0x00081010, 0x00200010)
)  # PatientID, OtherPatientIDs, AccessionNumber, InstitutionName, department, StationName, StudyID
# PS3.15 E.1.1: the de-identified object says so (PatientIdentityRemoved, DeidentificationMethod
# and its code sequence; CID 7050 code 113100 is the Basic Profile).
_DEIDENTIFICATION_CODES = {
    "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE": (
        "113100",
        "Basic Application Confidentiality Profile",
    ),
}


def _profile_for(options: DeidentifyOptions) -> Profile:
    profiles: dict[str, Any] = {
        "KEEP_ALL_PROFILE": KeepAllProfile,
        "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE": BasicProfile,
        "MINIMAL_KEEP_LIST_PROFILE": MinimalKeepListProfile,
        "DEIDENTIFY_TAG_CONTENTS": lambda: TagContentsProfile(text.TEXT_VRS),
        "KEEP_LIST": lambda: KeepListProfile(options.tags),
        "REMOVE_LIST": lambda: RemoveListProfile(options.tags),
    }
    profile: Profile = profiles[options.filter_profile]()
    return profile


@dataclass
class _Instance:
    """Per-instance state of one deidentify() call."""

    uid_map: UidMap
    patient: str
    shift_days: int
    names: re.Pattern[str] | None = None


class Deidentifier:
    """Applies one DeidentifyConfig to DICOM instances.

    Args:
        config: the ``config`` of a DeidentifyDicomStoreRequest (a DeidentifyConfig as JSON).
        operation_key: the operation's secret (≥ 16 bytes), used for UIDs and wherever the
            config gives no cryptoKey (Cloud Healthcare: "a default key is generated for each
            de-identify operation"). Store it with the operation: a resumed operation must use
            the same key to map UIDs, shift dates and hash values as before. Random if omitted.

    Raises:
        DeidentifyConfigError: the config is invalid (a ValueError; the service answers 400).
    """

    def __init__(self, config: Mapping[str, Any], *, operation_key: bytes | None = None) -> None:
        self.options = parse_config(config)
        self.operation_key = operation_key or secrets.token_bytes(32)
        if len(self.operation_key) < 16:
            raise ValueError("operation_key must be at least 16 bytes")
        self.profile = _profile_for(self.options)
        self.map_uids = not self.options.skip_id_redaction
        self.inspects_text = self.options.filter_profile == "DEIDENTIFY_TAG_CONTENTS"

    def uid_map(self, *, record: bool = False) -> UidMap:
        """A UID map for this operation; equal in every process holding this Deidentifier."""
        return UidMap(self.operation_key, record=record)

    def deidentify(self, ds: Dataset, *, uid_map: UidMap | None = None) -> Dataset:
        """De-identify ``ds`` in place (its file meta too) and return it.

        Args:
            ds: a dataset read by pydicom (deferred values are fine; only the attributes the
                profile needs are decoded).
            uid_map: the operation's UID map (``self.uid_map()`` if omitted).
        """
        uid_map = uid_map or self.uid_map()
        # Cloud Healthcare DateShiftConfig: per patient ID, else per study.
        patient = _string(ds, _PATIENT_ID) or _string(ds, _STUDY_INSTANCE_UID)
        instance = _Instance(
            uid_map=uid_map,
            patient=patient,
            shift_days=text.date_shift_days(self._date_key(), patient),
        )
        if self.inspects_text:
            instance.names = text.known_name_pattern(_person_names(ds))
        if self.options.text_redaction_mode != "REDACT_NO_TEXT" and _PIXEL_DATA in ds:
            self._redact_pixels(ds)
        self._walk(ds, self.profile.for_dataset(ds), instance)
        self._mark(ds)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            # PS3.10 7.1: these name the application (and its AE title, often a hospital's
            # station) that wrote the original file; the writer of the new file sets its own.
            for tag in _WRITER_META:
                if tag in meta:
                    del meta[tag]
            if self.map_uids and _SOP_INSTANCE_UID in ds:
                meta.MediaStorageSOPInstanceUID = ds[_SOP_INSTANCE_UID].value
        return ds

    def _redact_pixels(self, ds: Dataset) -> None:
        # Before the tags are filtered: the names and IDs to look for are still there.
        words = image.detect_words(ds)
        if self.options.text_redaction_mode == "REDACT_ALL_TEXT":
            image.blank(ds, words)
            ds.BurnedInAnnotation = "NO"
            return
        identifiers = [_string(ds, tag) for tag in _IDENTIFIER_TAGS]
        known = text.known_name_pattern(_person_names(ds), identifiers)
        image.blank(ds, image.sensitive_words(words, known, self.options.custom_regexes))

    def _date_key(self) -> bytes:
        for transformation in self.options.transformations:
            if transformation.kind == "date_shift" and transformation.crypto_key:
                return transformation.crypto_key
        return self.operation_key

    def _walk(self, ds: Dataset, profile: Profile, instance: _Instance) -> None:
        # The element dict directly: Dataset.get_item per tag costs as much as the rest of
        # the walk, and most elements are only looked at, never decoded (deferred raw values).
        for tag, raw in list(ds._dict.items()):
            vr = raw.VR
            if vr is None or vr == "UN":
                # Implicit VR, or explicit UN for a known attribute (a sequence, often):
                # pydicom decodes it with the dictionary's VR, so the profile must judge it so.
                vr = _vr_of(tag)
            if tag & 0xFFFF == 0:  # group lengths (retired) would be wrong after changes
                del ds[tag]
                continue
            action = profile.action(tag, vr)
            if action is Action.REMOVE:
                del ds[tag]
                continue
            if action is Action.KEEP and (vr != "UI" or not self._maps_uid(tag)):
                continue
            # Values replaced without being read: swap in a new raw element. Decoding the old
            # value and validating the new one through DataElement costs more than the rest
            # of the walk (py-spy), and both are pointless for a value that is thrown away.
            if isinstance(raw, RawDataElement) and vr not in ("SQ", "UN"):
                replacement = self._raw_replacement(raw, vr, action, instance)
                if replacement is not None:
                    ds._dict[tag] = replacement
                    continue
            element = ds[tag]
            vr = element.VR
            if vr == "SQ":
                self._sequence(element, action, profile, instance)
            elif action is Action.EMPTY:
                element.value = None
            elif action is Action.DUMMY:
                element.value = self._dummy(tag, vr, element, instance)
            elif vr == "UI":
                if self._maps_uid(tag):
                    element.value = _map_values(element.value, instance.uid_map)
            elif action is Action.CONTENTS:
                self._contents(element, instance)

    def _maps_uid(self, tag: int) -> bool:
        return self.map_uids and is_instance_uid_tag(tag)

    def _raw_replacement(
        self, raw: RawDataElement, vr: str, action: Action, instance: _Instance
    ) -> RawDataElement | None:
        """The raw element replacing ``raw``, or None where the value must be decoded (numeric
        dummies, free-text transformations)."""
        if action is Action.EMPTY:
            value = b""
        elif action is Action.DUMMY and vr in _DUMMY_BYTES:
            value = _DUMMY_BYTES[vr]
        elif vr == "UI" and action is not Action.CONTENTS:
            if not self._maps_uid(raw.tag) or not raw.value:
                return raw
            # UI values are ASCII digits and dots (PS3.5 6.2); anything else is mapped as is.
            old = raw.value.decode("ascii", "replace").split("\\")
            value = "\\".join(instance.uid_map(uid) for uid in old).encode("ascii")
            if len(value) % 2:
                value += b"\0"  # UI pads with NUL to an even length (PS3.5 6.2)
        else:
            return None
        return RawDataElement(
            raw.tag, vr, len(value), value, 0, raw.is_implicit_VR, raw.is_little_endian
        )

    def _sequence(
        self, element: DataElement, action: Action, profile: Profile, instance: _Instance
    ) -> None:
        if action is Action.EMPTY:
            element.value = Sequence()
            return
        # KEEP_WHOLE keeps everything inside (UIDs still remapped, so references hold).
        inner = KeepAllProfile() if action is Action.KEEP_WHOLE else profile.inner(element.tag)
        for item in element.value:
            self._walk(item, inner, instance)

    def _dummy(self, tag: int, vr: str, element: DataElement, instance: _Instance) -> Any:
        if vr == "UI":
            return _map_values(element.value, instance.uid_map) if self.map_uids else element.value
        if vr in _NUMERIC_VRS:
            return 0
        return _DUMMY.get(vr)

    def _contents(self, element: DataElement, instance: _Instance) -> None:
        value = element.value
        if value is None or value == "":
            return
        keyword = keyword_for_tag(element.tag)
        vr = element.VR
        # Assign only what changed: re-setting an untouched value re-validates it, and an
        # original's invalid value is not ours to complain about.
        if isinstance(value, MultiValue | list):
            new_values = [self._text_value(str(v), keyword, vr, instance) for v in value]
            if new_values != [str(v) for v in value]:
                element.value = new_values
        else:
            new_value = self._text_value(str(value), keyword, vr, instance)
            if new_value != str(value):
                element.value = new_value

    def _text_value(self, value: str, keyword: str, vr: str, instance: _Instance) -> str:
        info_type = text.attribute_info_type(keyword, vr)
        if info_type is not None:
            if info_type in self.options.exclude_info_types:
                return value
            transformation = self._transformation_for(info_type)
            new = text.transform(
                value,
                info_type,
                transformation,
                key=self.operation_key,
                shift_days=instance.shift_days,
                vr=vr,
            )
            return text.fit_value(new, vr)
        if vr not in text.FREE_TEXT_VRS:
            return value
        pieces: list[str] = []
        position = 0
        for finding in text.find(value, instance.names):
            if finding.info_type in self.options.exclude_info_types:
                continue
            pieces.append(value[position : finding.start])
            pieces.append(
                text.transform(
                    value[finding.start : finding.end],
                    finding.info_type,
                    self._transformation_for(finding.info_type),
                    key=self.operation_key,
                    shift_days=instance.shift_days,
                )
            )
            position = finding.end
        if not pieces:
            return value
        pieces.append(value[position:])
        return text.fit_value("".join(pieces), vr)

    def _transformation_for(self, info_type: str) -> Transformation:
        # TextConfig: the first transformation naming this infoType (or naming none) applies;
        # DLP's default for text is to replace the finding with its infoType's name.
        for transformation in self.options.transformations:
            if transformation.applies_to(info_type):
                return transformation
        return _DEFAULT_TRANSFORMATION

    def _mark(self, ds: Dataset) -> None:
        profile = self.options.filter_profile
        if profile not in ("ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE", "MINIMAL_KEEP_LIST_PROFILE"):
            return
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = f"dicomql {profile}"[:64]
        code = _DEIDENTIFICATION_CODES.get(profile)
        if code is not None:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code[0], "DCM", code[1]
            ds.DeidentificationMethodCodeSequence = Sequence([item])


def _vr_of(tag: int) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


def _string(ds: Dataset, tag: BaseTag) -> str:
    if tag not in ds:
        return ""
    value = ds[tag].value
    return "" if value is None else str(value).strip()


def _map_values(value: Any, uid_map: UidMap) -> Any:
    if value is None:
        return value
    if isinstance(value, MultiValue | list):
        return [uid_map(str(uid)) for uid in value]
    return uid_map(str(value))


def _person_names(ds: Dataset) -> list[str]:
    names: list[str] = []
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        vr = raw.VR if raw is not None and raw.VR else _vr_of(tag)
        if vr == "PN":
            value = ds[tag].value
            if isinstance(value, MultiValue | list):
                names.extend(str(v) for v in value)
            elif value:
                names.append(str(value))
    return names


def deidentify_bytes(
    deidentifier: Deidentifier, data: bytes, uid_map: UidMap | None = None
) -> bytes:
    """Read a DICOM file from bytes, de-identify it, and return the new file's bytes.

    A module-level function of picklable arguments, so a service can hand it to a process pool
    (``pool.submit(deidentify_bytes, deidentifier, data)``): each process builds its UID map from
    the Deidentifier's key and so maps UIDs like every other process.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deviations were accepted at ingest (see parse.py)
        ds = dcmread(io.BytesIO(data))
        decode_mislabelled(ds)
    deidentifier.deidentify(ds, uid_map=uid_map)
    output = io.BytesIO()
    ds.save_as(output, enforce_file_format=True)
    return output.getvalue()
