"""Body outline, lungs and bone of a CT by HU thresholds and morphology (SimpleITK): the ``body-contour`` plug-in.

The CT is a 3D :class:`SimpleITK.Image` in HU whose geometry places voxels in patient space (LPS, mm),
as :func:`fusion.volume.load_series` returns it; :func:`build_hu_image` wraps a numpy HU array.
Morphology works in the axial plane (kernel radius 0 across slices, so thick or uneven slices change
nothing) unless said otherwise; radii are given in mm and turned into voxels per axis (anisotropic pixels are
fine; a radius under half a pixel means no operation on that axis). Components are 3D, face-connected.

- **External** (RTROIInterpretedType EXTERNAL): voxels above ``body_threshold_hu`` (-400 HU), holes filled
  slice by slice; eroded by ``body_opening_radius_mm`` (5 mm). The body is the component holding the
  largest eroded part, within twice that radius (in 3D) of it, less the other eroded parts dilated back
  (a couch touching the patient through a narrow contact). So noise, a separate couch, a thin couch shell
  (beyond about 5 mm from the skin) and anything joined through a neck under 2 x 5 mm are dropped; a thick
  couch pressed flat against the back over a wider contact is not told apart. Then a closing of
  ``body_closing_radius_mm`` (3 mm) and holes filled slice by slice (lungs, bowel gas, trachea are inside).
- **Lungs** (ORGAN): voxels below ``lung_threshold_hu`` (-400 HU) inside the body, less every component
  touching the body's outline on some slice (outside air let in by the closing), keeping components of at
  least ``lung_min_volume_cc`` (30 cc); closing of ``lung_closing_radius_mm`` (2 mm) and holes (vessels)
  filled slice by slice, within the body. The trachea and main bronchi are part of it where connected, and
  a bowel gas pocket of 30 cc or more would count too.
- **Bones** (ORGAN): voxels above ``bone_threshold_hu`` (200 HU) inside the body; an opening by reconstruction
  of ``bone_opening_radius_mm`` (1 mm: a component stays, whole, when part of it survives the opening) and
  components below ``bone_min_volume_cc`` (0.1 cc) dropped, so noise goes and bone keeps its outline.
  Contrast agent, calcifications and metal above 200 HU count as bone.

A structure that is not found (no air enclosed by the body, a body too small for lungs) comes back with an
empty mask, volume 0 and ``empty_reason`` saying why, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from rt.errors import GeometryError
from rt.grid import MM3_PER_CC

#: Name and version written as provenance into every object the plug-in produces.
ALGORITHM_NAME = "body-contour"
ALGORITHM_VERSION = "1.0.0"

EXTERNAL = "External"
LUNGS = "Lungs"
BONES = "Bones"

BoolVolume = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class AutoContourParameters:
    """Thresholds (HU), morphology radii (mm) and minimum component volumes (cc) of :func:`contour_body`."""

    body_threshold_hu: float = -400.0
    body_opening_radius_mm: float = 5.0
    body_closing_radius_mm: float = 3.0
    lung_threshold_hu: float = -400.0
    lung_min_volume_cc: float = 30.0
    lung_closing_radius_mm: float = 2.0
    bone_threshold_hu: float = 200.0
    bone_opening_radius_mm: float = 1.0
    bone_min_volume_cc: float = 0.1

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ContouredStructure:
    """One structure found: a boolean mask (z, y, x) on the CT grid, its volume (cc) and how to draw it.

    ``empty_reason`` is "" when the mask has voxels, else a sentence saying why it has none.
    """

    name: str
    interpreted_type: str
    colour: tuple[int, int, int]
    mask: BoolVolume = field(repr=False)
    volume_cc: float
    empty_reason: str = ""


@dataclass(frozen=True, slots=True)
class AutoContourResult:
    """The structures :func:`contour_body` found, the CT grid they lie on (LPS, mm) and the parameters used."""

    structures: tuple[ContouredStructure, ...]
    parameters: AutoContourParameters
    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    direction: tuple[float, ...]
    algorithm_name: str = ALGORITHM_NAME
    algorithm_version: str = ALGORITHM_VERSION

    def structure(self, name: str) -> ContouredStructure:
        for item in self.structures:
            if item.name == name:
                return item
        raise KeyError(f"no structure {name!r}; have {', '.join(s.name for s in self.structures)}")

    def build_mask_image(self, name: str) -> sitk.Image:
        """The mask of structure ``name`` as a uint8 image on the CT grid (geometry included)."""
        image = sitk.GetImageFromArray(self.structure(name).mask.astype(np.uint8))
        image.SetOrigin(self.origin_mm)
        image.SetSpacing(self.spacing_mm)
        image.SetDirection(self.direction)
        return image

    def to_dict(self) -> dict[str, Any]:
        return {"algorithm": {"name": self.algorithm_name, "version": self.algorithm_version},
                "parameters": self.parameters.to_dict(),
                "structures": [{"name": s.name, "interpreted_type": s.interpreted_type, "volume_cc": s.volume_cc,
                                "empty_reason": s.empty_reason} for s in self.structures]}


def build_hu_image(hu: npt.NDArray[Any], spacing_mm: Sequence[float],
                   origin_mm: Sequence[float] = (0.0, 0.0, 0.0),
                   direction: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)) -> sitk.Image:
    """A CT image from a (z, y, x) HU array and its spacing (x, y, z), origin (LPS, mm) and direction cosines."""
    array = np.asarray(hu)
    if array.ndim != 3:
        raise GeometryError(f"a CT volume needs 3 dimensions (z, y, x), got shape {array.shape}")
    if len(spacing_mm) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing_mm):
        raise GeometryError(f"spacing must be 3 positive numbers (x, y, z) in mm, got {tuple(spacing_mm)}")
    image = sitk.GetImageFromArray(array.astype(np.float32, copy=False))
    image.SetSpacing(tuple(float(s) for s in spacing_mm))
    image.SetOrigin(tuple(float(v) for v in origin_mm))
    image.SetDirection(tuple(float(v) for v in direction))
    return image


def contour_body(ct: sitk.Image, parameters: AutoContourParameters | None = None) -> AutoContourResult:
    """External, Lungs and Bones of the CT ``ct`` (a 3D image in HU, geometry in LPS mm); see the module doc."""
    parameters = parameters or AutoContourParameters()
    if ct.GetDimension() != 3 or ct.GetNumberOfComponentsPerPixel() != 1:
        raise GeometryError(f"a CT volume must be a 3D scalar image, got {ct.GetDimension()}D with "
                            f"{ct.GetNumberOfComponentsPerPixel()} components per voxel")
    spacing = tuple(float(s) for s in ct.GetSpacing())
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise GeometryError(f"CT spacing must be positive, got {spacing} mm")
    hu = sitk.GetArrayViewFromImage(ct)
    if not np.isfinite(hu).all():
        raise GeometryError("the CT has non-finite voxel values")
    voxel_cc = float(np.prod(spacing)) / MM3_PER_CC
    grid = _Grid(spacing, voxel_cc)

    body = _find_body(hu, grid, parameters)
    body_reason = "" if body.any() else f"no voxel above {parameters.body_threshold_hu:g} HU survives the opening"
    lungs, bones = np.zeros_like(body), np.zeros_like(body)
    if body.any():
        box = _box(body, [1, 1, 0])  # lungs and bones lie within the body: work on its bounding box
        lungs[box], lung_reason = _find_lungs(hu[box], body[box], grid, parameters)
        bones[box], bone_reason = _find_bones(hu[box], body[box], grid, parameters)
    else:
        lung_reason = bone_reason = "no body"
    structures = (
        _structure(EXTERNAL, "EXTERNAL", (0, 200, 0), body, voxel_cc, body_reason),
        _structure(LUNGS, "ORGAN", (0, 160, 255), lungs, voxel_cc, lung_reason),
        _structure(BONES, "ORGAN", (240, 230, 140), bones, voxel_cc, bone_reason),
    )
    origin = tuple(float(v) for v in ct.GetOrigin())
    return AutoContourResult(structures, parameters, (origin[0], origin[1], origin[2]),
                             (spacing[0], spacing[1], spacing[2]), tuple(float(v) for v in ct.GetDirection()))


@dataclass(frozen=True, slots=True)
class _Grid:
    spacing_mm: tuple[float, ...]
    voxel_cc: float

    def radius(self, radius_mm: float, *, across_slices: bool = False) -> list[int]:
        """Kernel radius in voxels (x, y, z): in the axial plane only (z 0) unless ``across_slices``."""
        return [round(radius_mm / self.spacing_mm[0]), round(radius_mm / self.spacing_mm[1]),
                round(radius_mm / self.spacing_mm[2]) if across_slices else 0]


def _image(mask: BoolVolume) -> sitk.Image:
    return sitk.GetImageFromArray(mask.astype(np.uint8))


def _array(image: sitk.Image) -> BoolVolume:
    return sitk.GetArrayFromImage(image).astype(bool)


def _erode(mask: BoolVolume, radius: list[int]) -> BoolVolume:
    if not any(radius):
        return mask
    return _array(sitk.BinaryErode(_image(mask), radius, sitk.sitkBall, 0, 1, True))


def _dilate(mask: BoolVolume, radius: list[int]) -> BoolVolume:
    if not any(radius):
        return mask
    return _array(sitk.BinaryDilate(_image(mask), radius, sitk.sitkBall, 0, 1, False))


def _close(mask: BoolVolume, radius: list[int]) -> BoolVolume:
    if not any(radius):
        return mask
    return _array(sitk.BinaryMorphologicalClosing(_image(mask), radius, sitk.sitkBall, 1, True))


def _box(mask: BoolVolume, pad: list[int]) -> tuple[slice, slice, slice]:
    """The bounding box (z, y, x slices) of a non-empty ``mask``, widened by ``pad`` voxels (x, y, z)."""
    bounds = []
    for axis, margin in zip((0, 1, 2), pad[::-1], strict=True):
        present = np.nonzero(mask.any(axis=tuple(a for a in (0, 1, 2) if a != axis)))[0]
        bounds.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + margin + 1, mask.shape[axis])))
    return bounds[0], bounds[1], bounds[2]


def _dilate_in_box(mask: BoolVolume, radius: list[int]) -> BoolVolume:
    dilated = np.zeros_like(mask)
    box = _box(mask, [r + 1 for r in radius])
    dilated[box] = _dilate(mask[box], radius)
    return dilated


def _open(mask: BoolVolume, radius: list[int]) -> BoolVolume:
    return _dilate(_erode(mask, radius), radius)


def _labels(mask: BoolVolume) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
    """Face-connected 3D components, largest first, and their voxel counts (index 0: background)."""
    relabelled = sitk.RelabelComponent(sitk.ConnectedComponent(_image(mask), False), 0, True)
    labels: npt.NDArray[np.uint32] = sitk.GetArrayFromImage(relabelled).astype(np.uint32, copy=False)
    return labels, np.bincount(labels.ravel())


def _fill_holes_per_slice(mask: BoolVolume) -> BoolVolume:
    filled = mask.copy()
    for k in np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]:
        plane = sitk.GetImageFromArray(mask[k].astype(np.uint8))
        filled[k] = sitk.GetArrayFromImage(sitk.BinaryFillhole(plane, False, 1)).astype(bool)
    return filled


def _find_body(hu: npt.NDArray[Any], grid: _Grid, parameters: AutoContourParameters) -> BoolVolume:
    above = np.asarray(hu > parameters.body_threshold_hu)
    if not above.any():
        return above
    solid = _fill_holes_per_slice(above)  # lungs filled: the thin walls around them do not break the erosion
    labels, _ = _labels(solid)
    radius = grid.radius(parameters.body_opening_radius_mm)
    eroded_labels, _ = _labels(_erode(solid, radius))
    if eroded_labels.any():
        # The component the opening's largest part lies in, less the other parts the opening keeps (a couch
        # touching the patient): thin parts of the body itself (its ends, a nose) stay.
        core = eroded_labels == 1
        body: BoolVolume = labels == int(np.argmax(np.bincount(labels[core])))
        body &= _dilate_in_box(core, grid.radius(2.0 * parameters.body_opening_radius_mm, across_slices=True))
        others = eroded_labels > 1
        if others.any():
            body &= ~_dilate_in_box(others, radius)
    else:
        body = labels == 1  # nothing as thick as the opening: the largest component
    if not body.any():
        return body
    closing = grid.radius(parameters.body_closing_radius_mm)
    box = _box(body, [r + 1 for r in closing])
    body[box] = _fill_holes_per_slice(_close(body[box], closing))
    return body


def _outline(mask: BoolVolume) -> BoolVolume:
    """The voxels of ``mask`` with an in-plane face neighbour outside it (image edges count as outside)."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    inner = (padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:])
    return mask & ~inner


def _find_lungs(hu: npt.NDArray[Any], body: BoolVolume, grid: _Grid,
                parameters: AutoContourParameters) -> tuple[BoolVolume, str]:
    air = np.asarray(hu < parameters.lung_threshold_hu) & body
    if not air.any():
        return np.zeros_like(body), f"no air (below {parameters.lung_threshold_hu:g} HU) inside the body"
    labels, counts = _labels(air)
    open_to_outside = np.unique(labels[_outline(body) & air])
    keep = counts * grid.voxel_cc >= parameters.lung_min_volume_cc
    keep[0] = False
    keep[open_to_outside] = False
    if not keep.any():
        return np.zeros_like(body), (f"no enclosed air region of at least {parameters.lung_min_volume_cc:g} cc "
                                     f"inside the body (largest {counts[1:].max() * grid.voxel_cc:.3g} cc)")
    lungs = keep[labels]
    lungs = _fill_holes_per_slice(_close(lungs, grid.radius(parameters.lung_closing_radius_mm))) & body
    return lungs, ""


def _find_bones(hu: npt.NDArray[Any], body: BoolVolume, grid: _Grid,
                parameters: AutoContourParameters) -> tuple[BoolVolume, str]:
    dense = np.asarray(hu > parameters.bone_threshold_hu) & body
    if not dense.any():
        return dense, f"no voxel above {parameters.bone_threshold_hu:g} HU inside the body"
    labels, counts = _labels(dense)
    keep = counts * grid.voxel_cc >= parameters.bone_min_volume_cc
    # Opening by reconstruction: a component stays whole when some of it survives the opening.
    keep &= np.isin(np.arange(counts.size), labels[_open(dense, grid.radius(parameters.bone_opening_radius_mm))])
    keep[0] = False
    if not keep.any():
        return np.zeros_like(body), (f"no region above {parameters.bone_threshold_hu:g} HU of at least "
                                     f"{parameters.bone_min_volume_cc:g} cc survives the opening")
    return keep[labels], ""


def _structure(name: str, interpreted_type: str, colour: tuple[int, int, int], mask: BoolVolume, voxel_cc: float,
               reason: str) -> ContouredStructure:
    mask.setflags(write=False)
    return ContouredStructure(name, interpreted_type, colour, mask, float(np.count_nonzero(mask)) * voxel_cc, reason)
