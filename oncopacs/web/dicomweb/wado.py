"""DICOMweb routes (wado)."""
