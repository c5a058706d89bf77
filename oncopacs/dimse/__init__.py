"""DICOM network services (DIMSE) on pynetdicom: C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE."""
