"""Which attributes each filter profile keeps, empties, replaces or removes.

A profile answers, per tag, one of the :class:`Action` values; the engine applies it at every
nesting level. The Basic Profile comes from PS3.15 Table E.1-1 (``_basic_profile``); its
alternatives are resolved to the least-revealing choice that still leaves a valid object (see
``_BASIC``). MINIMAL_KEEP_LIST_PROFILE keeps, per SOP class, the attributes PS3.3 requires (Type
1, 1C, 2, 2C) in the modules of that SOP class's IOD (``_minimal_keep_list``), at every nesting
level, and of those gives the ones the Basic Profile would touch a dummy (Type 1) or an empty
value (Type 2); see :class:`MinimalKeepListProfile`.
"""

from __future__ import annotations

import enum
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

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

# MINIMAL_KEEP_LIST_PROFILE for a SOP class the PS3.3 tables do not know (a private or retired
# one): a fixed list of the Type 1 and 2 attributes of the modules every image object needs,
# kept with their values.
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

# … and the Type 2 attributes among them that identify a patient, study or person; kept present
# (so the object is valid) but emptied.
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

    def for_dataset(self, ds: Dataset) -> Profile:
        """The profile to apply to the top level of ``ds`` (one that depends on its SOP class
        returns a narrower profile)."""
        return self

    def inner(self, tag: int) -> Profile:
        """The profile for the items of the sequence ``tag`` when its action is CLEAN."""
        return self


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
    """MINIMAL_KEEP_LIST_PROFILE: per SOP class, only what PS3.3 requires of that class's IOD.

    For a known SOP class (``_minimal_keep_list``: PS3.3's tables of every storage IOD), an
    attribute stays only if it is required (Type 1, 1C, 2 or 2C) by a mandatory module of the
    IOD, or by a conditional module (which the original has only when its condition holds, and
    the profile never adds anything), at that nesting level; plus the Image Pixel attributes
    needed to decode the pixels. Of the attributes kept, those the Basic Profile would remove,
    empty or replace are given a dummy (Type 1, 1C) or emptied (Type 2, 2C), so the output never
    reveals more than the Basic Profile's would. A required sequence whose items PS3.3's tables
    do not describe further (the deeper levels of an SR content tree) has its items cleaned with
    the Basic Profile. An unknown SOP class gets the fixed MINIMAL_KEEP / MINIMAL_EMPTY lists.
    """

    def __init__(self) -> None:
        self._basic = BasicProfile()
        # Built on first use per SOP class; a race between threads builds one twice, harmlessly.
        self._by_sop_class: dict[str, Profile] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {}  # rebuilt on demand in the receiving process (process pools)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def for_dataset(self, ds: Dataset) -> Profile:
        element = ds.get(_SOP_CLASS_UID)
        sop_class_uid = str(element.value).strip("\0 ") if element is not None else ""
        profile = self._by_sop_class.get(sop_class_uid)
        if profile is None:
            tree = _required_attributes(sop_class_uid)
            profile = (
                _RequiredAttributesProfile(tree, self._basic, top_level=True)
                if tree is not None
                else self
            )
            self._by_sop_class[sop_class_uid] = profile
        return profile

    def action(self, tag: int, vr: str) -> Action:
        if tag in MINIMAL_KEEP:
            return Action.KEEP_WHOLE if vr == "SQ" else Action.KEEP
        if tag in MINIMAL_EMPTY:
            return Action.EMPTY
        return Action.REMOVE


_SOP_CLASS_UID = BaseTag(0x00080016)
# Sequences whose items may contain the same sequence again, to any depth: the SR content tree
# (PS3.3 C.17.3, Table C.17-6 "Include Document Content Macro" recursively). PS3.3's tables
# describe one level; deeper levels get the same rules.
_SELF_NESTING = frozenset({0x0040A730})  # ContentSequence
# A required attribute: its type and, for a sequence, what is required in its items.
_Tree = dict[int, tuple[str, "_Tree"]]


def _required_attributes(sop_class_uid: str) -> _Tree | None:
    """What PS3.3 requires of instances of ``sop_class_uid`` as a tree of tags, or None for a
    SOP class the tables do not know."""
    from dicomql.dicom.deid import _minimal_keep_list as tables  # 50 ms: only when used

    iod = tables.SOP_CLASS_IODS.get(sop_class_uid)
    if iod is None:
        return None
    tree: _Tree = {}
    for module, _usage in tables.IOD_MODULES[iod]:
        for entry in tables.MODULE_ATTRIBUTES[module].split():
            path, type_ = entry.split(":")
            level = tree
            tags = [int(tag, 16) for tag in path.split("/")]
            for sequence in tags[:-1]:
                level = level.setdefault(sequence, ("1", {}))[1]
            known = level.get(tags[-1])
            if known is None:
                level[tags[-1]] = (type_, {})
            elif type_ < known[0]:  # the stricter of two modules' types ("1" < "1C" < "2")
                level[tags[-1]] = (type_, known[1])
    return tree


class _RequiredAttributesProfile(Profile):
    """One nesting level of MinimalKeepListProfile for a known SOP class."""

    def __init__(self, tree: _Tree, basic: BasicProfile, *, top_level: bool = False) -> None:
        self.actions: dict[int, Action] = {}
        self.inner_profiles: dict[int, Profile] = {}
        for tag, (type_, children) in tree.items():
            required_empty = type_.startswith("2")
            if _dictionary_vr(tag) == "SQ":
                basic_action = basic.action(tag, "SQ")
                if required_empty and basic_action in (Action.REMOVE, Action.EMPTY):
                    self.actions[tag] = Action.EMPTY
                    continue
                self.actions[tag] = Action.CLEAN
                items_profile: Profile = basic
                if children:
                    items = _RequiredAttributesProfile(children, basic)
                    if tag in _SELF_NESTING:
                        items.actions.setdefault(tag, Action.CLEAN)
                        items.inner_profiles.setdefault(tag, items)
                    items_profile = items
                self.inner_profiles[tag] = items_profile
                continue
            basic_action = basic.action(tag, _dictionary_vr(tag))
            if basic_action in (Action.KEEP, Action.CLEAN, Action.UID):
                self.actions[tag] = Action.KEEP  # UIDs are still remapped on KEEP
            else:
                self.actions[tag] = Action.EMPTY if required_empty else Action.DUMMY
        if top_level:  # whatever decoding the pixels needs, even if PS3.3 calls it Type 3
            for tag in IDENTITY | IMAGE_PIXEL:
                self.actions.setdefault(tag, Action.KEEP)

    def action(self, tag: int, vr: str) -> Action:
        return self.actions.get(tag, Action.REMOVE)

    def inner(self, tag: int) -> Profile:
        return self.inner_profiles.get(tag, self)


def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"


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
