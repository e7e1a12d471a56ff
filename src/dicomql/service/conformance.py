"""The two conformance profiles and what each serves: the one place that decides it.

``google`` (the default) serves what Cloud Healthcare's DICOM conformance statement documents and
refuses the rest the way Google's service does, so code that works against a local store keeps
working in the cloud. ``standard`` also serves what DICOM PS3.18 requires of an origin server
beyond Google's subset, for viewers and DICOMweb clients that expect the whole standard.
Endpoints ask :func:`conformance_of` and never compare profile names themselves.

STOW-RS of DICOM JSON metadata and bulk data (PS3.18 10.5.1.4) is served under both: Google
documents it ("Store DICOM JSON metadata with JPEG files"), so it has no flag here.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

GOOGLE = "google"
STANDARD = "standard"
PROFILES = (GOOGLE, STANDARD)


@dataclass(frozen=True)
class Conformance:
    """What one profile serves beyond the part both share."""

    name: str
    # PS3.18 10.4.1.1.3: rendered study and series resources (Google renders instances and
    # frames only: "Rendered Resources: Instance, Frames").
    rendered_study_and_series: bool
    # PS3.18 10.4.1.1.5 (thumbnails); Google: "It does not support Thumbnail resources."
    thumbnails: bool
    # PS3.18 Table 10.4.4-1: metadata as multipart/related; type="application/dicom+xml"
    # (Required); Google serves metadata as application/dicom+json only.
    metadata_xml: bool
    # PS3.18 10.4.1.1.4 and Table 10.4.4-1: instance resources as multipart/related;
    # type="application/octet-stream" and the instance-level Bulkdata resource; Google serves
    # bulk data only at the BulkDataURIs its metadata returns.
    instance_bulkdata: bool
    # PS3.18 Table 10.6.1-5 / PS3.4 Annex C: every required matching key; Google documents a
    # fixed list (conformance statement, "Search transaction").
    standard_search_keys: bool

    def refusal(self, what: str) -> str:
        """The message of a refusal of ``what`` under this profile."""
        return (
            f"{what} is not supported by the Cloud Healthcare API's DICOM conformance statement;"
            " run `dicomql serve --conformance standard` to serve what PS3.18 requires."
        )


_PROFILES = {
    GOOGLE: Conformance(
        GOOGLE,
        rendered_study_and_series=False,
        thumbnails=False,
        metadata_xml=False,
        instance_bulkdata=False,
        standard_search_keys=False,
    ),
    STANDARD: Conformance(
        STANDARD,
        rendered_study_and_series=True,
        thumbnails=True,
        metadata_xml=True,
        instance_bulkdata=True,
        standard_search_keys=True,
    ),
}


def profile(name: str) -> Conformance:
    """The profile called ``name``.

    Raises:
        ValueError: not one of :data:`PROFILES`.

    >>> profile("standard").thumbnails
    True
    """
    try:
        return _PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown conformance profile {name!r}; expected one of {', '.join(PROFILES)}"
        ) from None


def conformance_of(request: Request) -> Conformance:
    """The profile the service answering ``request`` was configured with."""
    return profile(request.app.state.service.config.conformance)
