"""PS3.5 9.1 UIDs: digits and dots, no empty component, at most 64 characters (leading zeros
pass)."""

from __future__ import annotations

import doctest

import pytest

from dicomql.dicom import uids
from dicomql.dicom.uids import uid_problem


@pytest.mark.parametrize(
    "uid",
    [
        "0",
        "1.2",
        "1.02.3",  # legacy leading zeros are accepted (module docstring says why)
        "00",
        "1.2.840.10008.1.2.1",
        "2.25.329800735698586629295641978511506172918",
        "1." * 31 + "1",
    ],
)
def test_valid_uids(uid: str) -> None:
    assert uid_problem(uid) is None


@pytest.mark.parametrize(
    ("uid", "reason"),
    [
        ("", "empty"),
        ("../../../escaped", "only digits and dots"),
        ("1.2/3", "only digits and dots"),
        ("1.2.3\x00", "only digits and dots"),
        ("١.٢", "only digits and dots"),  # Arabic-Indic digits are not DICOM digits
        ("1.2.a", "only digits and dots"),
        (" 1.2", "only digits and dots"),
        ("1..2", "empty component"),
        (".1.2", "empty component"),
        ("1.2.", "empty component"),
        ("1." * 32 + "1", "longer than 64"),
        ("9" * 5000, "longer than 64"),
    ],
)
def test_invalid_uids_say_why(uid: str, reason: str) -> None:
    problem = uid_problem(uid)
    assert problem is not None and reason in problem


def test_doctests() -> None:
    assert doctest.testmod(uids).failed == 0
