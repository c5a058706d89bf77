"""DICOMweb routes (qido)."""
