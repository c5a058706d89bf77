"""An RT Structure Set from the masks of :func:`rt.autocontour.contour_body`, with the provenance of the plug-in.

The contours are traced along the voxel edges of each slice (:func:`fusion.rtstruct_writer.compute_mask_polygons`),
so the project's reader rasterises them back to the same voxels. The structure set references every CT slice
(ContourImageSequence) and the CT's frame of reference, and names the algorithm that made it twice: a
ContributingEquipmentSequence item (Manufacturer "OncoPACS", ManufacturerModelName = plug-in name,
SoftwareVersions = its version, purpose "Processing Equipment") and, per ROI, ROIGenerationAlgorithm AUTOMATIC
with a ROIGenerationDescription naming algorithm and version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from fusion.rtstruct_writer import RoiContours, build_rtstruct, compute_mask_polygons
from rt.autocontour import AutoContourResult
from rt.errors import DicomInputError, GeometryError

MANUFACTURER = "OncoPACS"
#: CID 7005 Contributing Equipment Purposes: (109102, DCM, "Processing Equipment").
PROCESSING_EQUIPMENT = ("109102", "DCM", "Processing Equipment")
#: In-plane position tolerance between the mask grid and a slice, as a fraction of the pixel spacing.
_POSITION_TOLERANCE = 0.05


@dataclass(frozen=True, slots=True)
class AlgorithmIdentity:
    """The plug-in that produced an object: its name and version (written as DICOM provenance)."""

    name: str
    version: str

    @classmethod
    def of(cls, result: AutoContourResult) -> AlgorithmIdentity:
        return cls(result.algorithm_name, result.algorithm_version)

    @property
    def description(self) -> str:
        return f"{self.name} {self.version}"


def build_contributing_equipment(algorithm: AlgorithmIdentity) -> Dataset:
    """One ContributingEquipmentSequence item naming ``algorithm`` as the processing equipment."""
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = PROCESSING_EQUIPMENT
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = DicomSequence([purpose])
    item.Manufacturer = MANUFACTURER
    item.ManufacturerModelName = algorithm.name[:64]
    item.SoftwareVersions = algorithm.version[:64]
    item.ContributionDescription = f"automatic contours by {algorithm.description}"[:64]
    return item


def compute_slice_indices(result: AutoContourResult, slices: Sequence[Dataset]) -> tuple[int, ...]:
    """The mask slice index (z) of every dataset in ``slices``; GeometryError when a slice is off the grid."""
    nz, ny, nx = result.structures[0].mask.shape
    if len(slices) != nz:
        raise GeometryError(f"{len(slices)} CT slices given, the masks have {nz}")
    axes = np.asarray(result.direction, dtype=np.float64).reshape(3, 3)
    origin = np.asarray(result.origin_mm, dtype=np.float64)
    spacing = np.asarray(result.spacing_mm, dtype=np.float64)
    indices = []
    for ds in slices:
        for keyword in ("ImagePositionPatient", "Rows", "Columns", "SOPInstanceUID", "SOPClassUID"):
            if keyword not in ds:
                raise DicomInputError(keyword, sop_instance_uid=str(ds.get("SOPInstanceUID", "")) or None)
        if (int(ds.Rows), int(ds.Columns)) != (ny, nx):
            raise GeometryError(f"slice {ds.SOPInstanceUID} is {ds.Rows}x{ds.Columns}, the masks {ny}x{nx}")
        offset = axes.T @ (np.asarray([float(v) for v in ds.ImagePositionPatient]) - origin) / spacing
        k = round(float(offset[2]))
        if np.abs(offset[:2]).max() > _POSITION_TOLERANCE or abs(offset[2] - k) > 0.1 or not 0 <= k < nz:
            raise GeometryError(f"slice {ds.SOPInstanceUID} does not lie on a plane of the mask grid")
        indices.append(k)
    if len(set(indices)) != nz:
        raise GeometryError("two CT slices lie on the same plane of the mask grid")
    return tuple(indices)


def build_autocontour_rtstruct(result: AutoContourResult, reference_slices: Sequence[Dataset], *,
                               algorithm: AlgorithmIdentity | None = None) -> Dataset:
    """The RT Structure Set of the non-empty structures of ``result``, on the CT ``reference_slices``.

    ``reference_slices``: the CT datasets the masks were computed from (any order; pixel data not needed).
    UIDs derive from the CT series, the structures and the algorithm, so the same input gives the same UIDs.
    """
    algorithm = algorithm or AlgorithmIdentity.of(result)
    if not reference_slices:
        raise GeometryError("an RT Structure Set needs the CT slices it refers to")
    compute_slice_indices(result, reference_slices)
    found = [s for s in result.structures if not s.empty_reason and s.mask.any()]
    if not found:
        raise GeometryError("no structure found to write: " + "; ".join(f"{s.name}: {s.empty_reason}"
                                                                       for s in result.structures))
    rois = [RoiContours(s.name, compute_mask_polygons(result.build_mask_image(s.name)), s.interpreted_type, s.colour)
            for s in found]
    ds = build_rtstruct(reference_slices, rois, label="AutoContour", description=algorithm.description,
                        series_description=f"Auto contours ({algorithm.description})",
                        entropy=(algorithm.name, algorithm.version))
    ds.SeriesNumber = 902
    ds.ManufacturerModelName = algorithm.name[:64]
    ds.SoftwareVersions = algorithm.version[:64]
    ds.ContributingEquipmentSequence = DicomSequence([build_contributing_equipment(algorithm)])
    for item in ds.StructureSetROISequence:
        item.ROIGenerationAlgorithm = "AUTOMATIC"
        item.ROIGenerationDescription = f"{algorithm.description} (HU thresholds and morphology)"[:64]
    return ds
