"""Pure image-fusion code (registration, SUV, 4D CT). Imports no Flask, Dash, SQLAlchemy or oncopacs.

Volumes are SimpleITK images in DICOM patient space (LPS, mm); a registration's transform maps
fixed physical points to moving physical points (SimpleITK's convention). PET quantification
(SUV, ROI statistics, response criteria, the SR report) lives in :mod:`fusion.pet`.
"""

# The modules a notebook imports (``from fusion import registration, volume``); none is imported until asked for.
__all__ = [
    "ct4d",
    "dicom_reg",
    "dose_warp",
    "errors",
    "pet",
    "propagation",
    "qa",
    "registration",
    "rtstruct_writer",
    "target_tracking",
    "volume",
]
