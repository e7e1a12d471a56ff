"""DICOMweb (PS3.18) on a DICOM store: STOW-RS, QIDO-RS, WADO-RS and Google's DICOMweb verbs."""
