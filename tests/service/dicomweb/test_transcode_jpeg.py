"""Instances retrieved in JPEG baseline (8-bit) through dicomweb-client: Google's conformance
statement lists ``transfer-syntax=1.2.840.10008.1.2.4.50`` for study, series and instance
resources; dicomql encodes it with Pillow. Decoded pixels are compared with the stored ones."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from PIL import Image
from pydicom.uid import JPEGBaseline8Bit

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import DICOMWEB, TEST_FILES, create_store


@pytest.fixture
def dicomweb(service_config: ServiceConfig, live_server) -> Iterator[DICOMwebClient]:  # type: ignore[no-untyped-def]
    create_store(service_config)
    yield DICOMwebClient(url=f"{live_server.url}{DICOMWEB}")


def _stored(client: DICOMwebClient, name: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(TEST_FILES / name)
    client.store_instances([ds])
    return ds


@pytest.mark.parametrize("name", ["SC_rgb_rle_2frame.dcm", "image_dfl.dcm"])
def test_instance_in_jpeg_baseline_decodes_close_to_the_stored_pixels(
    dicomweb: DICOMwebClient, name: str
) -> None:
    ds = _stored(dicomweb, name)
    served = dicomweb.retrieve_instance(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        media_types=(("application/dicom", JPEGBaseline8Bit),),
    )
    assert served.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    decoded = served.pixel_array.astype(int)
    assert decoded.shape == ds.pixel_array.shape
    assert np.abs(decoded - ds.pixel_array.astype(int)).mean() <= 2.0


def test_a_16_bit_instance_in_jpeg_baseline_is_406(dicomweb: DICOMwebClient) -> None:
    ds = _stored(dicomweb, "CT_small.dcm")
    with pytest.raises(requests.HTTPError) as raised:
        dicomweb.retrieve_instance(
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            media_types=(("application/dicom", JPEGBaseline8Bit),),
        )
    assert raised.value.response.status_code == 406


def test_frames_re_encoded_as_jpeg_baseline(dicomweb: DICOMwebClient) -> None:
    """Google's conformance statement lists multipart/related; type="image/jpeg";
    transfer-syntax=1.2.840.10008.1.2.4.50 for frames."""
    ds = _stored(dicomweb, "SC_rgb_rle_2frame.dcm")
    frames = dicomweb.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        frame_numbers=[2, 1],
        media_types=(("image/jpeg", JPEGBaseline8Bit),),
    )
    assert len(frames) == 2
    for data, expected in zip(frames, (ds.pixel_array[1], ds.pixel_array[0]), strict=True):
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and image.size == (100, 100)
        decoded = np.asarray(image.convert("RGB")).astype(int)
        assert np.abs(decoded - expected.astype(int)).mean() <= 2.0


def test_16_bit_frames_as_jpeg_are_406(dicomweb: DICOMwebClient) -> None:
    ds = _stored(dicomweb, "CT_small.dcm")
    with pytest.raises(requests.HTTPError) as raised:
        dicomweb.retrieve_instance_frames(
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            frame_numbers=[1],
            media_types=(("image/jpeg", JPEGBaseline8Bit),),
        )
    assert raised.value.response.status_code == 406
