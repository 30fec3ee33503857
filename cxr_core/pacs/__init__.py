"""Hospital connectivity: a DICOM node (C-STORE/C-ECHO) and DICOMweb, above the review stage."""
