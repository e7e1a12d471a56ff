"""Rendered instances and frames through dicomweb-client: the ``window`` parameter (PS3.18
8.3.5.1.3) with its three functions (PS3.3 C.11.2.1.2), the rescale and window of each frame's
functional groups (PS3.3 C.7.6.16.2.9, C.7.6.16.2.10), and images without PixelRepresentation.
Decoded PNG pixels are compared with values computed here from the standard's formulas."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from dicomweb_client import DICOMwebClient
from PIL import Image
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import DICOMWEB, create_store

RAMP = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)  # 0 … 4080


@pytest.fixture
def dicomweb(service_config: ServiceConfig, live_server) -> Iterator[DICOMwebClient]:  # type: ignore[no-untyped-def]
    create_store(service_config)
    yield DICOMwebClient(url=f"{live_server.url}{DICOMWEB}")


def _instance(frames: np.ndarray, **attributes: object) -> Dataset:
    ds = Dataset()
    ds.preamble = b"\0" * 128  # PS3.10 as dicomweb-client writes it (pydicom.dcmwrite)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = frames.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    for name, value in attributes.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    ds.PixelData = frames.astype(np.uint16).tobytes()
    return ds


def _rendered(client: DICOMwebClient, ds: Dataset, frame: int | None = None, **params: str):  # type: ignore[no-untyped-def]
    client.store_instances([ds])
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    if frame is None:
        data = client.retrieve_instance_rendered(*uids, media_types=("image/png",), params=params)
    else:
        data = client.retrieve_instance_frames_rendered(
            *uids, frame_numbers=[frame], media_types=("image/png",), params=params
        )
    return np.asarray(Image.open(io.BytesIO(data)))


def _linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    # PS3.3 C.11.2.1.2.1
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    y = np.where(x <= c - 0.5 - (w - 1) / 2, 0, np.where(x > c - 0.5 + (w - 1) / 2, 255, y))
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _linear_exact(x: np.ndarray, c: float, w: float) -> np.ndarray:
    # PS3.3 C.11.2.1.3.2
    y = ((x - c) / w + 0.5) * 255
    y = np.where(x <= c - w / 2, 0, np.where(x > c + w / 2, 255, y))
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _sigmoid(x: np.ndarray, c: float, w: float) -> np.ndarray:
    # PS3.3 C.11.2.1.3.1
    y = 255 / (1 + np.exp(-4 * (x - c) / w))
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ("0,100,linear", _linear(RAMP.astype(float), 0, 100)),
        ("1000,4000,linear", _linear(RAMP.astype(float), 1000, 4000)),
        ("2048,1024,linear-exact", _linear_exact(RAMP.astype(float), 2048, 1024)),
        ("2048,1024,sigmoid", _sigmoid(RAMP.astype(float), 2048, 1024)),
    ],
)
def test_window_parameter_sets_the_voi_transform(
    dicomweb: DICOMwebClient, window: str, expected: np.ndarray
) -> None:
    """PS3.18 8.3.5.1.3 ``window=center,width,function``; the data's own window is overridden."""
    ds = _instance(RAMP, WindowCenter=40, WindowWidth=80)
    pixels = _rendered(dicomweb, ds, window=window)
    assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= 1


def test_different_windows_give_different_images(dicomweb: DICOMwebClient) -> None:
    narrow = _rendered(dicomweb, _instance(RAMP), window="0,100,linear")
    wide = _rendered(dicomweb, _instance(RAMP), window="1000,4000,linear")
    assert (narrow != wide).any()
    assert narrow[0, 0] == 129 and narrow[-1, -1] == 255 and 0 < wide[8, 8] < 255


def test_a_bad_window_is_a_400(dicomweb: DICOMwebClient) -> None:
    ds = _instance(RAMP)
    with pytest.raises(requests.HTTPError) as raised:
        _rendered(dicomweb, ds, window="40,0,linear")
    assert raised.value.response.status_code == 400
    assert "width" in raised.value.response.json()["error"]["message"]
    with pytest.raises(requests.HTTPError) as raised:
        _rendered(dicomweb, _instance(RAMP), window="40,400,cubic")
    assert raised.value.response.status_code == 400


def test_each_frame_uses_its_own_rescale_and_window(dicomweb: DICOMwebClient) -> None:
    """PS3.3 C.7.6.16.2.9 (Pixel Value Transformation) and C.7.6.16.2.10 (Frame VOI LUT) in
    the per-frame functional groups, over the shared ones."""
    frames = np.stack([RAMP, RAMP])
    per_frame = Sequence()
    for slope, (center, width) in ((1.0, (1000, 2000)), (2.0, (4000, 2000))):
        item = Dataset()
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = slope, -100
        transform.RescaleType = "US"
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        item.PixelValueTransformationSequence = Sequence([transform])
        item.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(item)
    ds = _instance(frames, PerFrameFunctionalGroupsSequence=per_frame)
    ds.SharedFunctionalGroupsSequence = Sequence([Dataset()])
    first = _rendered(dicomweb, ds, frame=1)
    second = dicomweb.retrieve_instance_frames_rendered(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        frame_numbers=[2],
        media_types=("image/png",),
    )
    second = np.asarray(Image.open(io.BytesIO(second)))
    x = RAMP.astype(float)
    assert np.abs(first.astype(int) - _linear(x - 100, 1000, 2000)).max() <= 1
    assert np.abs(second.astype(int) - _linear(2 * x - 100, 4000, 2000)).max() <= 1


def test_an_image_without_pixel_representation_renders_as_unsigned(
    dicomweb: DICOMwebClient,
) -> None:
    pixels = _rendered(dicomweb, _instance(RAMP, PixelRepresentation=None))
    # No window anywhere: the value range stretched to 0-255.
    expected = np.rint(RAMP.astype(float) * 255 / 4080).astype(np.uint8)
    assert np.abs(pixels.astype(int) - expected).max() <= 1
    assert math.isclose(float(pixels.mean()), float(expected.mean()), abs_tol=1)


def _rendered_here(ds: Dataset, index: int) -> np.ndarray:
    """What rendering the instance parsed whole gives (the path that reads the file's header)."""
    from pydicom import dcmread

    from dicomql.dicom.render import RenderOptions, render_frame

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    whole = dcmread(io.BytesIO(buffer.getvalue()))
    png = render_frame(whole, whole, index, RenderOptions(media_type="image/png"))
    return np.asarray(Image.open(io.BytesIO(png)))


_FRAMES = np.stack([RAMP, RAMP[::-1], RAMP.T]) + np.array([0, 7, 300]).reshape(3, 1, 1)
_VOI_LUT = Dataset()
_VOI_LUT.LUTDescriptor = [4096, 0, 16]
_VOI_LUT.add_new(0x00283006, "US", list(range(4096, 0, -1)))  # LUT Data: a reversing table


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"PhotometricInterpretation": "MONOCHROME1", "RescaleSlope": -2, "RescaleIntercept": 9},
        {"WindowCenter": [1000, 40], "WindowWidth": [800, 400], "VOILUTFunction": "SIGMOID"},
        {"BitsStored": 12, "HighBit": 11, "PixelRepresentation": 1},
        {"VOILUTSequence": Sequence([_VOI_LUT])},
    ],
)
@pytest.mark.parametrize("frame", [None, 3])
def test_a_rendered_frame_is_the_one_its_whole_file_gives(
    dicomweb: DICOMwebClient, attributes: dict[str, object], frame: int | None
) -> None:
    """Native grayscale frames are rendered from the header values the index holds and the
    frame's bytes alone (retrieve.py): the image must be the one the whole file gives."""
    ds = _instance(_FRAMES, **attributes)
    expected = _rendered_here(ds, 0 if frame is None else frame - 1)
    assert np.array_equal(_rendered(dicomweb, ds, frame), expected)
