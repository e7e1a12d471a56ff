"""The in-memory header read (``dicom.header_reader``) held to ``dcmread(stop_before_pixels=True)``
element by element: the same dataset, the file left at the same place, the same error, on every
file of pydicom's bundled test data (storable or not), the benchmark's generated instances, and
truncated and damaged copies of them."""

from __future__ import annotations

import io
import warnings
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.filereader import read_sequence
from pydicom.tag import BaseTag

from bench import datagen
from dicomql.dicom.header_reader import read_explicit_little, read_items
from tests.support.dicomweb import TEST_FILES


def _corpus() -> dict[str, bytes]:
    files = {
        path.name: path.read_bytes()
        for path in sorted(TEST_FILES.rglob("*"))
        if path.is_file() and path.suffix.lower() in ("", ".dcm", ".dicom")
    }
    template = datagen.small_template("CT")
    files["bench small CT"] = template.header + datagen.small_pixels()
    # Without (0002,0000) File Meta Information Group Length (12 bytes after the preamble and
    # DICM): pydicom converts the group's first element still.
    files["bench small CT, no group length"] = (
        files["bench small CT"][:132] + files["bench small CT"][144:]
    )
    ct = datagen.ct_template()
    files["bench CT 512x512"] = ct.header + datagen.ct_slices(1)[0]
    return files


CORPUS = _corpus()
# Comparing datasets converts their values, and pydicom warns about the damaged ones.
pytestmark = pytest.mark.filterwarnings("ignore")


def _outcome(read: object, data: bytes) -> tuple[str, object, int]:
    """What a read does with ``data``: ("ok", dataset, position) or ("error", type, 0)."""
    file = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = read(file)  # type: ignore[operator]
    except Exception as exc:  # compared by type with the other read's
        return "error", type(exc), 0
    return "ok", ds, file.tell()


def _variants(data: bytes) -> list[bytes]:
    """The file, cut short at several places, and with a byte of its header flipped."""
    variants = [data]
    for cut in (132, 200, 700, len(data) // 2, len(data) - 3):
        if 0 < cut < len(data):
            variants.append(data[:cut])
    if len(data) > 400:
        damaged = bytearray(data)
        damaged[300] ^= 0xFF
        variants.append(bytes(damaged))
    return variants


def _state(dataset: Dataset) -> dict[str, Any]:
    """A dataset's attributes but its elements (compared apart) and the file it was read from."""
    state = dict(vars(dataset))
    for name in ("_dict", "file_meta"):
        state.pop(name, None)
    if "buffer" in state:
        state["buffer"] = type(state["buffer"])
    return state


def test_the_items_read_are_pydicoms() -> None:
    data = CORPUS["bench small CT"]
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    sequence = ds._dict[BaseTag(0x00101002)]  # Other Patient IDs Sequence, defined length
    value = sequence.value
    items = read_items(value, ds.original_character_set)
    reference = read_sequence(io.BytesIO(value), False, True, len(value), ds.original_character_set)
    assert items is not None
    assert len(items) == len(reference) >= 1
    for item, reference_item in zip(items, reference, strict=True):
        assert type(item) is type(reference_item)
        assert list(item._dict.items()) == list(reference_item._dict.items())
        # But where pydicom found the item: nothing reads it (the items are the JSON walk's).
        reference_state = _state(reference_item)
        del reference_state["seq_item_tell"], reference_state["file_tell"]
        assert _state(item) == reference_state


def test_the_corpus_covers_pydicoms_test_files_and_the_benchmark_data() -> None:
    assert len(CORPUS) >= 150
    assert "bench small CT" in CORPUS


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_the_fast_read_is_pydicoms_read(name: str) -> None:
    compared = 0
    for data in _variants(CORPUS[name]):
        fast = _outcome(read_explicit_little, data)
        if fast[0] == "ok" and fast[1] is None:
            continue  # not an explicit VR little endian file: dcmread reads it
        reference = _outcome(lambda file: dcmread(file, stop_before_pixels=True), data)
        assert fast[0] == reference[0], (fast, reference)
        if fast[0] == "error":
            assert fast[1] is reference[1]
            continue
        fast_ds, reference_ds = fast[1], reference[1]
        # Element by element as read (raw, unconverted: a damaged file's values may not
        # convert at all); a sequence read eagerly is compared as pydicom compares it.
        assert fast_ds._dict.keys() == reference_ds._dict.keys()
        for tag, element in fast_ds._dict.items():
            assert element == reference_ds._dict[tag], f"{tag:08X}"
        # The file meta as read too: which elements pydicom converted, which it left raw.
        fast_meta, reference_meta = fast_ds.file_meta, reference_ds.file_meta
        assert type(fast_meta) is type(reference_meta)
        assert list(fast_meta._dict.items()) == list(reference_meta._dict.items())
        assert [type(element) for element in fast_meta._dict.values()] == [
            type(element) for element in reference_meta._dict.values()
        ]
        assert _state(fast_meta) == _state(reference_meta)
        # The datasets built without their constructors: the same attributes.
        assert type(fast_ds) is type(reference_ds)
        assert _state(fast_ds) == _state(reference_ds)
        assert fast_ds.preamble == reference_ds.preamble
        assert fast_ds.original_encoding == reference_ds.original_encoding
        assert fast_ds.original_character_set == reference_ds.original_character_set
        assert fast[2] == reference[2], "the file is left elsewhere"
        compared += 1
    if name.startswith("bench"):
        assert compared >= 1
