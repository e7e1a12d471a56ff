"""Deflated Explicit VR Little Endian instances for the tests: deflate bombs, whose small
compressed data set inflates to as much as a test asks (issue 13 item 11), and damaged ones."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomql.dicom.structure import DEFLATED, skip_file_meta


def deflate_bomb(plain: bytes, inflated_extra: int) -> bytes:
    """``plain`` (a PS3.10 explicit VR little endian instance) deflated, its data set followed by
    a (7FE1,0010) OB of ``inflated_extra`` zeros, compressed chunk by chunk."""
    deflated_meta = io.BytesIO()
    ds = dcmread(io.BytesIO(plain))
    ds.file_meta.TransferSyntaxUID = DEFLATED
    ds.save_as(deflated_meta, enforce_file_format=True)
    meta_end = file_meta_end(deflated_meta.getvalue())
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflated_meta.getvalue()[:meta_end]]
    parts.append(compressor.compress(plain[file_meta_end(plain) :]))
    parts.append(
        compressor.compress(b"\xe1\x7f\x10\x00OB\x00\x00" + struct.pack("<I", inflated_extra))
    )
    zeros = bytes(1024 * 1024)
    for _ in range(inflated_extra // len(zeros)):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.compress(bytes(inflated_extra % len(zeros))))
    parts.append(compressor.flush())
    return b"".join(parts)


def file_meta_end(data: bytes) -> int:
    """Where the data set of the PS3.10 bytes ``data`` starts."""
    file = io.BytesIO(data)
    skip_file_meta(file)
    return file.tell()


# How a damaged deflated instance is damaged: cut part-way into its deflated data set, or its
# first deflate block marked of the reserved type (RFC 1951 3.2.3).
DAMAGES = ("truncated", "invalid block")


def damaged_deflated(damage: str) -> bytes:
    """pydicom's deflated test instance (image_dfl.dcm) damaged as ``damage`` (one of
    ``DAMAGES``) says; its file meta intact."""
    whole = intact_deflated()
    start = file_meta_end(whole)
    if damage == "truncated":
        return whole[: (start + len(whole)) // 2]
    return whole[:start] + b"\xff" + whole[start + 1 :]


def intact_deflated() -> bytes:
    """pydicom's deflated test instance, image_dfl.dcm."""
    return Path(get_testdata_file("image_dfl.dcm")).read_bytes()
