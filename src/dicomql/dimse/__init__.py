"""DIMSE (PS3.7) over the DICOM upper layer (PS3.8): scanners and PACS talk to a DICOM store
directly, through pynetdicom. See docs/dimse.md for what is supported."""
