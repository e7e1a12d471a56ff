"""The Native DICOM Model (PS3.19 A.1) of a DICOM JSON data set (PS3.18 F.2): the XML of
``application/dicom+xml`` search results and metadata, written directly (pydicom writes JSON,
not XML) from the same JSON the service stores."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pydicom.datadict import keyword_for_tag

NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
# PS3.19 A.1.1: the components of each person name group, in PS3.5 6.2 order.
_NAME_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def native_dicom_model(dataset: Mapping[str, Any]) -> str:
    """The XML document of one data set.

    >>> xml = native_dicom_model({"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^J"}]}})
    >>> xml.split(">", 2)[2][:60]
    '<DicomAttribute tag="00100010" vr="PN" keyword="PatientName">'
    >>> "<Alphabetic><FamilyName>Doe</FamilyName><GivenName>J</GivenName></Alphabetic>" in xml
    True
    """
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<NativeDicomModel xmlns="{NAMESPACE}" xml:space="preserve">'
        f"{_attributes(dataset)}</NativeDicomModel>"
    )


def _attributes(dataset: Mapping[str, Any]) -> str:
    out: list[str] = []
    creators = {
        tag: attribute.get("Value", [None])[0]
        for tag, attribute in dataset.items()
        if _is_private_creator(tag)
    }
    for tag, attribute in sorted(dataset.items()):
        vr = attribute.get("vr", "UN")
        # PS3.19 A.1.1: ``keyword`` for a standard attribute. Optional there, but
        # dicomweb-client reads a STOW response's attributes by keyword (and STOW answers XML
        # unless JSON is asked for, as Google's does).
        head = f'<DicomAttribute tag="{tag}" vr="{vr}"'
        keyword = _keyword(tag)
        if keyword:
            head += f' keyword="{keyword}"'
        creator = _private_creator_of(tag, creators)
        if creator:
            head += f" privateCreator={quoteattr(creator)}"
        out.append(head + ">")
        for position, value in enumerate(attribute.get("Value", []), start=1):
            out.append(_value(vr, position, value))
        if "BulkDataURI" in attribute:
            out.append(f"<BulkData uri={quoteattr(attribute['BulkDataURI'])}/>")
        if "InlineBinary" in attribute:
            out.append(f"<InlineBinary>{escape(attribute['InlineBinary'])}</InlineBinary>")
        out.append("</DicomAttribute>")
    return "".join(out)


def _keyword(tag: str) -> str:
    try:
        return keyword_for_tag(int(tag, 16))
    except ValueError:  # not a tag: written as given, without a keyword
        return ""


def _value(vr: str, position: int, value: Any) -> str:
    if vr == "SQ":
        return f'<Item number="{position}">{_attributes(value or {})}</Item>'
    if vr == "PN":
        groups = "".join(
            f"<{group}>{_name_components(value[group])}</{group}>"
            for group in _NAME_GROUPS
            if isinstance(value, dict) and value.get(group)
        )
        return f'<PersonName number="{position}">{groups}</PersonName>'
    if value is None:
        return f'<Value number="{position}"/>'
    return f'<Value number="{position}">{escape(_text(value))}</Value>'


def _name_components(group: str) -> str:
    return "".join(
        f"<{name}>{escape(part)}</{name}>"
        for name, part in zip(_NAME_COMPONENTS, group.split("^"), strict=False)
        if part
    )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_private_creator(tag: str) -> bool:
    group, element = int(tag[:4], 16), int(tag[4:], 16)
    return group % 2 == 1 and 0x0010 <= element <= 0x00FF


def _private_creator_of(tag: str, creators: Mapping[str, Any]) -> str | None:
    """The Private Creator that reserved a private element's block (PS3.5 7.8.1)."""
    group, element = int(tag[:4], 16), int(tag[4:], 16)
    if group % 2 == 0 or element < 0x1000:
        return None
    creator = creators.get(f"{group:04X}{element >> 8:04X}")
    return str(creator) if creator else None
