"""The structure walk (``dicom.structure``) reads each explicit VR element's length as PS3.5
7.1.2 writes it: SV and UV, like OB, with 2 reserved bytes and a 4-byte length."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32 as PYDICOMS_LENGTH_32

from dicomql.dicom.parse import UnreadableInstance, read_header
from dicomql.dicom.structure import check_structure, walk_explicit_little
from dicomql.dicom.tags import EXPLICIT_VR_LENGTH_32
from tests.support.dicomweb import (
    make_instance,
    values_resembling_a_deep_nest,
    with_64_bit_values,
)

NEST_LIKE_SV = values_resembling_a_deep_nest("q")
NEST_LIKE_UV = values_resembling_a_deep_nest("Q")


def test_the_vrs_with_a_4_byte_length_are_pydicoms() -> None:
    # The header read is exact to pydicom's only while pydicom reads the same lengths so.
    assert {vr.value for vr in PYDICOMS_LENGTH_32} == EXPLICIT_VR_LENGTH_32


@pytest.mark.parametrize("vr", [b"SV", b"UV", b"OB"])
def test_the_walk_steps_over_an_element_of_a_4_byte_length_to_the_next(vr: bytes) -> None:
    element = struct.pack("<HH2s2xI", 0x0072, 0x0082, vr, 16) + struct.pack("<qq", -2, 2**40)
    following = struct.pack("<HH2sH", 0x0072, 0x0084, b"LO", 2) + b"X "
    assert walk_explicit_little(element + following, 0, 1) == len(element)
    assert walk_explicit_little(element + following, 0, 2) == len(element + following)


@pytest.mark.parametrize(
    ("signed", "unsigned"),
    [([-5, 2**40], [2**63 + 7]), (NEST_LIKE_SV, None), (None, NEST_LIKE_UV)],
    ids=["plain", "SV bytes like a nest", "UV bytes like a nest"],
)
def test_sv_and_uv_values_are_read_as_numbers_whatever_their_bytes(
    signed: list[int] | None, unsigned: list[int] | None, tmp_path: Path
) -> None:
    """Before, the walk read their length as 2 bytes and refused the last two, as nested more
    than 64 deep."""
    data = with_64_bit_values(make_instance(), signed, unsigned)
    (tmp_path / "instance.dcm").write_bytes(data)
    # Held in memory the check walks in step with the header read; from a file, alone first.
    for source in (io.BytesIO(data), tmp_path / "instance.dcm"):
        model = read_header(source).dicom_json()
        assert model.get("00720082") == (signed and {"vr": "SV", "Value": signed})
        assert model.get("00720083") == (unsigned and {"vr": "UV", "Value": unsigned})


def test_an_sv_whose_length_runs_past_the_end_is_refused_for_its_value_not_a_nest() -> None:
    """The walk skips the 4-byte length it reads, reading nothing of the value as elements
    (before: a nest more than 64 deep); pydicom reads the rest of the file as the value, which
    is no whole number of 8-byte values here."""
    data = with_64_bit_values(make_instance(), NEST_LIKE_SV, None)
    at = data.index(b"\x72\x00\x82\x00SV")
    damaged = data[: at + 8] + struct.pack("<I", len(data)) + data[at + 12 :]
    assert walk_explicit_little(damaged, at, 1) == at + 12 + len(data)
    check_structure(io.BytesIO(damaged))
    assert (len(damaged) - at - 12) % 8 != 0
    with pytest.raises(UnreadableInstance, match="bytes per value"):
        read_header(io.BytesIO(damaged)).dicom_json()
