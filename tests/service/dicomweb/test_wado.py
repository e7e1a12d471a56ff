"""WADO-RS retrieval: transfer syntax negotiation, frames, rendered images and bulk data."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import generate_frames

from tests.support.dicomweb import (
    DICOMWEB,
    TEST_FILES,
    DicomWebClient,
    make_instance,
    read_multipart,
)

MULTIPART_DICOM = 'multipart/related; type="application/dicom"'


def _read(name: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(TEST_FILES / name)


def _store_file(client: DicomWebClient, name: str) -> str:
    """Store a bundled file; returns its instance path relative to the DICOMweb root."""
    assert client.stow([(TEST_FILES / name).read_bytes()]).status_code == 200
    ds = _read(name)
    return (
        f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )


def _get(client: DicomWebClient, path: str, accept: str | None = None, **params: str):  # type: ignore[no-untyped-def]
    headers = {"accept": accept} if accept else {}
    return client.http.get(f"{DICOMWEB}/{path}", headers=headers, params=params)


def test_default_retrieval_is_explicit_vr_little_endian(client: DicomWebClient) -> None:
    path = _store_file(client, "MR_small_implicit.dcm")  # stored implicit VR little endian
    response = _get(client, path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(MULTIPART_DICOM)
    [(headers, body)] = read_multipart(response.headers["content-type"], response.content)
    assert headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    served = pydicom.dcmread(io.BytesIO(body))
    assert served.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert served.PixelData == _read("MR_small_implicit.dcm").PixelData


def test_compressed_instance_is_decompressed_by_default(client: DicomWebClient) -> None:
    path = _store_file(client, "JPEG2000.dcm")
    [(_headers, body)] = read_multipart(*_parts(_get(client, path)))
    served = pydicom.dcmread(io.BytesIO(body))
    assert served.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    expected = _read("JPEG2000.dcm").pixel_array
    assert np.array_equal(served.pixel_array, expected)


def _parts(response):  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return response.headers["content-type"], response.content


def test_transfer_syntax_star_serves_stored_bytes(client: DicomWebClient) -> None:
    path = _store_file(client, "JPEG2000.dcm")
    [(headers, body)] = read_multipart(
        *_parts(_get(client, path, f"{MULTIPART_DICOM}; transfer-syntax=*"))
    )
    assert body == (TEST_FILES / "JPEG2000.dcm").read_bytes()
    assert headers["content-type"].endswith("transfer-syntax=1.2.840.10008.1.2.4.91")


def test_single_part_application_dicom_for_an_instance(client: DicomWebClient) -> None:
    path = _store_file(client, "CT_small.dcm")
    response = _get(client, path, "application/dicom; transfer-syntax=*")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom")
    assert response.content == (TEST_FILES / "CT_small.dcm").read_bytes()


def test_unavailable_transfer_syntax_is_406(client: DicomWebClient) -> None:
    path = _store_file(client, "CT_small.dcm")
    # pydicom has no JPEG baseline encoder: Google answers 406 where it cannot transcode.
    response = _get(client, path, f"{MULTIPART_DICOM}; transfer-syntax=1.2.840.10008.1.2.4.50")
    assert response.status_code == 406
    assert response.json()["error"]["code"] == 406


def test_study_level_accept_application_dicom_is_406(client: DicomWebClient) -> None:
    path = _store_file(client, "CT_small.dcm")
    study = path.split("/series/")[0]
    assert _get(client, study, "application/dicom").status_code == 406


def test_study_and_series_retrieval_return_every_instance(client: DicomWebClient) -> None:
    study, series = "1.2.826.0.9.1", "1.2.826.0.9.1.1"
    instances = [make_instance(study, series, f"1.2.826.0.9.1.1.{n}", seed=n) for n in range(3)]
    other = make_instance(study, "1.2.826.0.9.1.2", "1.2.826.0.9.1.2.1")
    assert client.stow([*instances, other]).status_code == 200
    star = f"{MULTIPART_DICOM}; transfer-syntax=*"
    study_parts = read_multipart(*_parts(_get(client, f"studies/{study}", star)))
    assert sorted(body for _, body in study_parts) == sorted([*instances, other])
    series_parts = read_multipart(*_parts(_get(client, f"studies/{study}/series/{series}", star)))
    assert sorted(body for _, body in series_parts) == sorted(instances)


@pytest.mark.parametrize(
    "path",
    ["studies/1.2.3", "studies/1.2.3/series/4.5", "studies/1.2.3/series/4.5/instances/6.7"],
)
def test_missing_resources_are_404(client: DicomWebClient, path: str) -> None:
    response = _get(client, path)
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


def test_native_frames_are_the_frames_pixel_bytes(client: DicomWebClient) -> None:
    path = _store_file(client, "rtdose.dcm")  # 15 frames of 10x10, 32-bit, implicit VR
    pixels = _read("rtdose.dcm").pixel_array
    response = _get(client, f"{path}/frames/1,3,15")
    content_type, body = _parts(response)
    assert content_type.startswith('multipart/related; type="application/octet-stream"')
    frames = [part for _, part in read_multipart(content_type, body)]
    assert frames == [pixels[0].tobytes(), pixels[2].tobytes(), pixels[14].tobytes()]


def test_compressed_frames_as_stored_with_star(client: DicomWebClient) -> None:
    path = _store_file(client, "SC_rgb_rle_2frame.dcm")
    ds = _read("SC_rgb_rle_2frame.dcm")
    stored = list(generate_frames(ds.PixelData, number_of_frames=2))
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    parts = read_multipart(*_parts(_get(client, f"{path}/frames/2", accept)))
    assert [body for _, body in parts] == [stored[1]]
    assert parts[0][0]["content-type"].startswith("image/x-dicom-rle")


def test_jpeg_frames_of_a_multiframe_instance_as_stored(client: DicomWebClient) -> None:
    path = _store_file(client, "examples_ybr_color.dcm")
    stored = list(generate_frames(_read("examples_ybr_color.dcm").PixelData, number_of_frames=30))
    accept = 'multipart/related; type="image/jpeg"'
    parts = read_multipart(*_parts(_get(client, f"{path}/frames/1,30", accept)))
    assert [body for _, body in parts] == [stored[0], stored[29]]


def test_compressed_frames_are_decoded_for_octet_stream(client: DicomWebClient) -> None:
    path = _store_file(client, "SC_rgb_rle_2frame.dcm")
    expected = _read("SC_rgb_rle_2frame.dcm").pixel_array[1].tobytes()
    parts = read_multipart(*_parts(_get(client, f"{path}/frames/2")))
    assert [body for _, body in parts] == [expected]


def test_jpeg_frames_can_be_asked_for_as_image_jpeg(client: DicomWebClient) -> None:
    path = _store_file(client, "SC_rgb_jpeg_dcmtk.dcm")
    accept = 'multipart/related; type="image/jpeg"'
    parts = read_multipart(*_parts(_get(client, f"{path}/frames/1", accept)))
    assert parts[0][0]["content-type"].startswith("image/jpeg")
    assert Image.open(io.BytesIO(parts[0][1])).size == (100, 100)


@pytest.mark.parametrize("frames", ["0", "16", "x", "2,,a"])
def test_bad_frame_numbers_are_client_errors(client: DicomWebClient, frames: str) -> None:
    path = _store_file(client, "rtdose.dcm")
    assert _get(client, f"{path}/frames/{frames}").status_code in (400, 404)


@pytest.mark.parametrize(("accept", "fmt"), [(None, "JPEG"), ("image/png", "PNG")])
def test_rendered_instance_decodes_with_pillow(
    client: DicomWebClient, accept: str | None, fmt: str
) -> None:
    path = _store_file(client, "CT_small.dcm")
    response = _get(client, f"{path}/rendered", accept)
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.content))
    assert image.format == fmt and image.size == (128, 128)
    assert len(np.unique(np.asarray(image))) > 10  # a real picture, not a flat field


def test_rendered_frame_honours_viewport(client: DicomWebClient) -> None:
    path = _store_file(client, "examples_ybr_color.dcm")  # 30 JPEG frames of 320x240
    response = _get(client, f"{path}/frames/4/rendered", "image/png", viewport="160,160")
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (160, 120)  # the aspect ratio is kept


def test_rendered_colour_jpeg_is_rgb(client: DicomWebClient) -> None:
    path = _store_file(client, "SC_rgb_rle_2frame.dcm")
    image = Image.open(io.BytesIO(_get(client, f"{path}/frames/2/rendered", quality="90").content))
    assert image.mode == "RGB"


@pytest.mark.parametrize("query", [{"viewport": "a,b"}, {"quality": "0"}, {"quality": "x"}])
def test_bad_render_parameters_are_400(client: DicomWebClient, query: dict[str, str]) -> None:
    path = _store_file(client, "CT_small.dcm")
    assert _get(client, f"{path}/rendered", **query).status_code == 400


def test_rendered_in_unsupported_media_type_is_406(client: DicomWebClient) -> None:
    path = _store_file(client, "CT_small.dcm")
    assert _get(client, f"{path}/rendered", "image/gif").status_code == 406


def test_pixel_data_bulkdata_is_the_stored_value(client: DicomWebClient) -> None:
    path = _store_file(client, "CT_small.dcm")
    parts = read_multipart(*_parts(_get(client, f"{path}/bulkdata/7FE00010")))
    assert [body for _, body in parts] == [_read("CT_small.dcm").PixelData]


def test_nested_bulkdata_by_tag_path(client: DicomWebClient) -> None:
    ds = pydicom.Dataset()
    item = pydicom.Dataset()
    item.add_new(0x00420011, "OB", b"\x01\x02" * 1000)
    ds.ContentSequence = [item]
    # Build on a generated instance so the UIDs and file meta are right.
    base = pydicom.dcmread(
        io.BytesIO(make_instance("1.2.826.0.7", "1.2.826.0.7.1", "1.2.826.0.7.1.1"))
    )
    base.ContentSequence = ds.ContentSequence
    buffer = io.BytesIO()
    base.save_as(buffer, enforce_file_format=True)
    assert client.stow([buffer.getvalue()]).status_code == 200
    path = "studies/1.2.826.0.7/series/1.2.826.0.7.1/instances/1.2.826.0.7.1.1"
    parts = read_multipart(*_parts(_get(client, f"{path}/bulkdata/0040A730/0/00420011")))
    assert [body for _, body in parts] == [b"\x01\x02" * 1000]
    assert _get(client, f"{path}/bulkdata/0040A730/5/00420011").status_code == 404
