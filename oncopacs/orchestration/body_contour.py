"""The shipped ``body-contour`` plug-in: body outline, lungs and bone of a CT as an RTSTRUCT and a DICOM SEG.

A thin wrapper of :func:`rt.autocontour.contour_body` (thresholds and morphology, SimpleITK) and its writers
(:mod:`rt.rtstruct_writer`, :mod:`rt.seg_writer`), which name the algorithm and version in every object they write.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom import Dataset
from pydicom.uid import CTImageStorage, generate_uid

from fusion.volume import load_series
from rt.autocontour import ALGORITHM_NAME, ALGORITHM_VERSION, contour_body
from rt.rtstruct_writer import build_autocontour_rtstruct
from rt.seg_writer import build_autocontour_seg


class BodyContour:
    """Body, lungs and bone of a CT series (thresholds in HU, radii in mm: see :mod:`rt.autocontour`)."""

    name = ALGORITHM_NAME
    version = ALGORITHM_VERSION
    accepts_modalities = ("CT",)
    accepts_sop_classes = (str(CTImageStorage),)
    produces = ("RTSTRUCT", "SEG")

    def run(self, datasets: Sequence[Dataset]) -> list[Dataset]:
        """An RT Structure Set and a Segmentation of the CT series ``datasets``.

        Their UIDs derive from the plug-in, its version and the exact input instances: the same series gives the
        same objects (the archive keeps the first), a series that has grown since gives new ones.
        """
        result = contour_body(load_series(list(datasets)))
        products = [build_autocontour_rtstruct(result, datasets), build_autocontour_seg(result, datasets)]
        inputs = sorted(str(ds.SOPInstanceUID) for ds in datasets)
        for product in products:
            kind = str(product.Modality)
            product.SeriesInstanceUID = generate_uid(entropy_srcs=[self.name, self.version, kind, "series", *inputs])
            product.SOPInstanceUID = generate_uid(entropy_srcs=[self.name, self.version, kind, *inputs])
            if getattr(product, "file_meta", None) is not None:
                product.file_meta.MediaStorageSOPInstanceUID = product.SOPInstanceUID
        return products


__all__ = ["BodyContour"]
