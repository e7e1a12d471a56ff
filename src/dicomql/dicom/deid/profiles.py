"""Which attributes each filter profile keeps, empties, replaces or removes.

A profile answers, per tag, one of the :class:`Action` values; the engine applies it at every
nesting level. The Basic Profile comes from PS3.15 Table E.1-1 (``_basic_profile``); its
alternatives are resolved to the least-revealing choice that still leaves a valid object (see
``_BASIC``). MINIMAL_KEEP_LIST_PROFILE keeps the Type 1 and 2 attributes of the modules every
image object needs (PS3.3 C.7 Patient, General Study, General Series, General Equipment,
General Image, Image Plane, Image Pixel, SOP Common; plus the modality image modules of CT, MR,
US, CR/DX and SC listed below), with the Type 2 ones that identify someone kept but emptied.
"""

from __future__ import annotations

import enum

from pydicom.datadict import tag_for_keyword

from dicomql.dicom.deid._basic_profile import ACTIONS, REPEATING_ACTIONS


class Action(enum.Enum):
    KEEP = "keep"  # keep the value (UIDs are still remapped)
    REMOVE = "remove"
    EMPTY = "empty"  # zero length (a Type 2 attribute stays present)
    DUMMY = "dummy"  # a VR-valid placeholder
    UID = "uid"  # replace with the mapped UID
    CLEAN = "clean"  # sequences: keep the items, de-identify them with the same profile
    KEEP_WHOLE = "keep_whole"  # sequences: keep the items with all their contents
    CONTENTS = "contents"  # DEIDENTIFY_TAG_CONTENTS: transform sensitive text in the value


# Table E.1-1 codes → what we do. Where the table offers a choice (X/Z: remove unless needed
# for validity), removal is safest for Type 3 attributes, and the Type 1/2 ones listed in
# _TYPE_2 / _TYPE_1 below are emptied or given dummies so the object stays valid. Sequences
# marked D or U* keep their items, de-identified (a ReferencedImageSequence keeps pointing at
# the remapped instance).
_BASIC = {
    "X": Action.REMOVE,
    "Z": Action.EMPTY,
    "D": Action.DUMMY,
    "U": Action.UID,
    "Z/D": Action.EMPTY,
    "X/Z": Action.REMOVE,
    "X/D": Action.REMOVE,
    "X/Z/D": Action.REMOVE,
    "X/Z/U*": Action.CLEAN,
}


def _tags(*keywords: str) -> frozenset[int]:
    tags = set()
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"not a DICOM keyword: {keyword}")  # programmer error in the lists
        tags.add(tag)
    return frozenset(tags)


# Table E.1-1 gives the SR Content Sequence "D": the tree must stay (it is Type 1 in SR
# documents) but its content replaced. We keep the tree, clean it with the same rules (names,
# dates, UIDs inside), and replace the free text of TEXT content items with a dummy.
_CONTENT_TREE = _tags("ContentSequence")
_CONTENT_TEXT = _tags("TextValue")

# What every stored instance needs to be found again (Cloud Healthcare indexes these).
IDENTITY = _tags("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")

# PS3.3 C.7.6.3 Image Pixel module (and multi-frame / palette attributes it refers to): without
# them PixelData cannot be decoded.
IMAGE_PIXEL = _tags(
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "PixelAspectRatio",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "ICCProfile",
    "NumberOfFrames",
    "FrameIncrementPointer",
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)

# MINIMAL_KEEP_LIST_PROFILE: kept with their values.
MINIMAL_KEEP = (
    IDENTITY
    | IMAGE_PIXEL
    | _tags(
        # SOP Common (C.12.1)
        "SpecificCharacterSet",
        # General Series (C.7.3.1), Frame of Reference (C.7.4.1)
        "Modality",
        "SeriesNumber",
        "Laterality",
        "PatientPosition",
        "FrameOfReferenceUID",
        "PositionReferenceIndicator",
        # General Equipment (C.7.5.1): Manufacturer is Type 2 and names no person
        "Manufacturer",
        # General Image (C.7.6.1), Image Plane (C.7.6.2)
        "InstanceNumber",
        "PatientOrientation",
        "ImageType",
        "AcquisitionNumber",
        "ImagesInAcquisition",
        "LossyImageCompression",
        "LossyImageCompressionRatio",
        "LossyImageCompressionMethod",
        "PixelSpacing",
        "ImageOrientationPatient",
        "ImagePositionPatient",
        "SliceThickness",
        "SliceLocation",
        # Modality LUT / VOI LUT (C.11.1, C.11.2)
        "RescaleIntercept",
        "RescaleSlope",
        "RescaleType",
        "WindowCenter",
        "WindowWidth",
        "VOILUTFunction",
        # CT Image (C.8.2.1)
        "KVP",
        "XRayTubeCurrent",
        "ExposureTime",
        "ConvolutionKernel",
        # MR Image (C.8.3.1)
        "ScanningSequence",
        "SequenceVariant",
        "ScanOptions",
        "MRAcquisitionType",
        "RepetitionTime",
        "EchoTime",
        "EchoTrainLength",
        "InversionTime",
        "MagneticFieldStrength",
        # CR / DX (C.8.1, C.8.11)
        "BodyPartExamined",
        "ViewPosition",
        "ImagerPixelSpacing",
        "PresentationIntentType",
        # US Image (C.8.5.6)
        "SequenceOfUltrasoundRegions",
        # SC Equipment (C.8.6.1)
        "ConversionType",
    )
)

# MINIMAL_KEEP_LIST_PROFILE: Type 2 attributes that identify a patient, study or person; kept
# present (so the object is valid) but emptied.
MINIMAL_EMPTY = _tags(
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "ContentDate",
    "ContentTime",
)


class Profile:
    """A filter profile: the action for any tag (given its VR)."""

    def action(self, tag: int, vr: str) -> Action:
        raise NotImplementedError


class KeepAllProfile(Profile):
    def action(self, tag: int, vr: str) -> Action:
        return Action.CLEAN if vr == "SQ" else Action.KEEP


class RemoveListProfile(Profile):
    def __init__(self, tags: frozenset[int]) -> None:
        self.tags = tags

    def action(self, tag: int, vr: str) -> Action:
        if tag in self.tags:
            return Action.REMOVE
        return Action.CLEAN if vr == "SQ" else Action.KEEP


class KeepListProfile(Profile):
    """Keeps the listed tags (a kept sequence whole), plus what a storable, decodable instance
    needs (IDENTITY and IMAGE_PIXEL); private tags go unless listed."""

    def __init__(self, tags: frozenset[int]) -> None:
        self.tags = tags | IDENTITY | IMAGE_PIXEL

    def action(self, tag: int, vr: str) -> Action:
        if tag in self.tags:
            return Action.KEEP_WHOLE if vr == "SQ" else Action.KEEP
        return Action.REMOVE


class BasicProfile(Profile):
    """PS3.15 E.1.1 Basic Application Level Confidentiality Profile; private attributes are
    removed (Table E.1-1 "Private attributes: X")."""

    def __init__(self) -> None:
        self.actions = {tag: _BASIC[code] for tag, code in ACTIONS.items()}
        for tag in _CONTENT_TREE:
            self.actions[tag] = Action.CLEAN
        for tag in _CONTENT_TEXT:
            self.actions[tag] = Action.DUMMY
        # Sequences whose action is D have no meaningful dummy; keep their items, cleaned.
        self._repeating = [(value, mask, _BASIC[code]) for value, mask, code in REPEATING_ACTIONS]

    def action(self, tag: int, vr: str) -> Action:
        if tag >> 16 & 1:
            return Action.REMOVE
        action = self.actions.get(tag)
        if action is None:
            for value, mask, repeating in self._repeating:
                if tag & mask == value:
                    return repeating
            return Action.CLEAN if vr == "SQ" else Action.KEEP
        if vr == "SQ" and action is Action.DUMMY:
            return Action.CLEAN
        return action


class MinimalKeepListProfile(Profile):
    def action(self, tag: int, vr: str) -> Action:
        if tag in MINIMAL_KEEP:
            return Action.KEEP_WHOLE if vr == "SQ" else Action.KEEP
        if tag in MINIMAL_EMPTY:
            return Action.EMPTY
        return Action.REMOVE


class TagContentsProfile(Profile):
    """DEIDENTIFY_TAG_CONTENTS: every attribute stays, text VRs get their sensitive content
    transformed; private attributes are removed, since their content cannot be interpreted."""

    def __init__(self, text_vrs: frozenset[str]) -> None:
        self.text_vrs = text_vrs

    def action(self, tag: int, vr: str) -> Action:
        if tag >> 16 & 1:
            return Action.REMOVE
        if vr == "SQ":
            return Action.CLEAN
        return Action.CONTENTS if vr in self.text_vrs else Action.KEEP
