"""DICOMweb building blocks without Flask: DICOM JSON, multipart bodies, QIDO parameters, rendering."""
