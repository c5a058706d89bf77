"""DICOMweb routes (metadata and bulk data)."""
