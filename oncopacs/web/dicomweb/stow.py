"""DICOMweb routes (stow)."""
