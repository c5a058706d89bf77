"""PET quantification: SUV from PET DICOM, per-ROI statistics, response criteria and the DICOM SR report.

Pure like :mod:`fusion`: imports no Flask, Dash, SQLAlchemy or oncopacs.
"""

# The modules a notebook imports (``from fusion.pet import suv, stats``); none is imported until asked for.
__all__ = ["errors", "response", "sr", "stats", "suv"]
