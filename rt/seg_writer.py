"""A DICOM Segmentation (binary, highdicom) of the masks of :func:`rt.autocontour.contour_body`.

One segment per non-empty structure, on the frames of the source CT series (frames without any segment are
left out), each with SegmentAlgorithmType AUTOMATIC and an AlgorithmIdentificationSequence naming the plug-in,
its version, the family "Morphological Operations" (CID 7162) and the parameters used; the equipment is
OncoPACS (ManufacturerModelName = plug-in name, SoftwareVersions = version) and a ContributingEquipmentSequence
item says the same with the purpose "Processing Equipment".
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from rt.autocontour import BONES, EXTERNAL, LUNGS, AutoContourResult
from rt.errors import GeometryError
from rt.rtstruct_writer import MANUFACTURER, AlgorithmIdentity, compute_slice_indices

#: Segmented property type (SNOMED CT) of each structure contour_body finds.
_PROPERTY_TYPES: dict[str, Code] = {EXTERNAL: codes.SCT.EntireBody, LUNGS: codes.SCT.Lung, BONES: codes.SCT.Bone}


def build_autocontour_seg(result: AutoContourResult, source_slices: Sequence[Dataset], *,
                          algorithm: AlgorithmIdentity | None = None) -> Dataset:
    """The binary Segmentation of the non-empty structures of ``result`` on the CT ``source_slices``.

    ``source_slices``: the CT datasets the masks were computed from (any order; pixel data not needed).
    UIDs derive from the CT series, the structures and the algorithm, so the same input gives the same UIDs.
    """
    algorithm = algorithm or AlgorithmIdentity.of(result)
    if not source_slices:
        raise GeometryError("a Segmentation needs the CT slices it was made from")
    indices = compute_slice_indices(result, source_slices)
    found = [s for s in result.structures if not s.empty_reason and s.mask.any()]
    if not found:
        raise GeometryError("no structure found to write: " + "; ".join(f"{s.name}: {s.empty_reason}"
                                                                       for s in result.structures))
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, family=codes.cid7162.MorphologicalOperations, version=algorithm.version,
        source=MANUFACTURER, parameters={key: f"{value:g}" for key, value in result.parameters.to_dict().items()})
    descriptions = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=s.name, segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=_PROPERTY_TYPES.get(s.name, codes.SCT.AnatomicalStructure),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=identification)
        for number, s in enumerate(found, start=1)]
    order = np.asarray(indices)
    pixels = np.stack([s.mask[order] for s in found], axis=-1).astype(np.uint8)  # (frames, rows, columns, segments)
    seed = [str(source_slices[0].get("SeriesInstanceUID", "")), algorithm.name, algorithm.version,
            *(f"{s.name}:{int(np.count_nonzero(s.mask))}" for s in found)]
    equipment = hd.ContributingEquipment(
        MANUFACTURER, codes.DCM.ProcessingEquipment, manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version, contribution_description=f"automatic segmentation by "
                                                                      f"{algorithm.description}"[:64])
    seg = hd.seg.Segmentation(
        source_images=list(source_slices), pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(entropy_srcs=[*seed, "seg-series"]),
        series_number=903, sop_instance_uid=generate_uid(entropy_srcs=[*seed, "seg-instance"]), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=algorithm.name, software_versions=algorithm.version,
        device_serial_number=algorithm.name, series_description=f"Auto segments ({algorithm.description})",
        content_label="AUTOCONTOUR", content_description=algorithm.description[:64],
        contributing_equipment=[equipment])
    return seg
