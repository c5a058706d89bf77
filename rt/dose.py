"""RT Dose: reading dose grids and sampling them onto other grids.

:func:`read_dose` returns the dose in Gy as a (z, y, x) array on a canonical axis-aligned grid
whose indices increase along +x, +y and +z (LPS, mm), whatever the stored orientation:

- ImageOrientationPatient must be axis-aligned: row and column directions each ±x, ±y or ±z
  (HFS ``1,0,0,0,1,0``, FFS ``-1,0,0,0,1,0``, HFP ``-1,0,0,0,-1,0``, FFP ``1,0,0,0,-1,0`` and
  transposed variants). Flipped or permuted axes are flipped/transposed into canonical order;
  oblique orientations raise :class:`~rt.errors.GeometryError`.
- GridFrameOffsetVector: if its first value is 0 the offsets are relative to the first frame,
  along the slice normal (row direction x column direction); otherwise they are absolute
  patient-z coordinates (only for a normal along ±z).
- Gy = stored value x DoseGridScaling. DoseUnits is GY or RELATIVE (DICOM allows no other, so a
  cGy dose is GY with a DoseGridScaling 100 times smaller, nothing to convert). A RELATIVE, missing
  or unknown DoseUnits is kept as read (upper case) and refused where Gy are needed
  (:func:`check_absolute_dose`).
- DoseType EFFECTIVE is a biologically weighted dose: :attr:`DoseGrid.dose_unit` labels it
  ``Gy(RBE)`` (``Gy(EQD2)`` for an EQD2 map of :func:`rt.summation.compute_eqd2_map`), PHYSICAL ``Gy``.
- DoseSummationType says what the grid holds: PLAN (the whole plan), MULTI_PLAN (several plans);
  BEAM, FRACTION, BRACHY, the *_SESSION types and CONTROL_POINT are parts of a plan
  (:attr:`DoseGrid.plan_dose_problem` says why it is not the plan dose); a FRACTION dose becomes a
  course dose only when asked (:func:`scale_fraction_dose`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from rt.derived import FRAME_OF_REFERENCE_KEYWORDS, copy_patient_study
from rt.errors import DicomInputError, GeometryError
from rt.grid import VoxelGrid

#: Tolerance on direction cosines being exactly axis-aligned.
_COSINE_TOLERANCE = 1e-4
#: Tolerance on uniform frame spacing, mm.
_FRAME_TOLERANCE_MM = 1e-3
#: The DoseUnits DICOM allows.
DOSE_UNITS = ("GY", "RELATIVE")
#: DoseSummationType values holding a whole plan's (or several plans') dose, with what to say about them.
_WHOLE_PLAN = {"PLAN": "", "PLAN_OVERVIEW": "", "MULTI_PLAN": "the summed dose of several plans",
               "RECORD": "the dose of a treatment record"}
#: DoseSummationType values holding a part of a plan: what the part is.
_PART_OF_PLAN = {
    "BEAM": "the dose of one or more beams",
    "FRACTION": "the dose of one fraction",
    "BRACHY": "the dose of one or more brachytherapy application setups",
    "FRACTION_SESSION": "the dose of one session of a fraction group",
    "BEAM_SESSION": "the dose of one session of one or more beams",
    "BRACHY_SESSION": "the dose of one session of brachytherapy application setups",
    "CONTROL_POINT": "the dose of control points of one beam in one fraction",
}


@dataclass(frozen=True, slots=True)
class DoseGrid:
    """A dose distribution on a canonical axis-aligned grid.

    dose_gy: (nz, ny, nx) array, Gy (or relative units when dose_units is RELATIVE).
    grid: the canonical grid (origin = centre of voxel (0, 0, 0), spacing > 0), mm.
    orientation: the dataset's ImageOrientationPatient, as stored (before canonicalisation).
    """

    dose_gy: npt.NDArray[np.float64] = field(repr=False)
    grid: VoxelGrid
    orientation: tuple[float, ...]
    dose_units: str = "GY"
    dose_type: str = ""
    dose_summation_type: str = ""
    frame_of_reference_uid: str = ""
    sop_instance_uid: str = ""
    referenced_plan_uid: str = ""  # ReferencedRTPlanSequence (first item)
    referenced_beam_numbers: tuple[int, ...] = ()  # ... > ReferencedFractionGroupSequence > ReferencedBeamSequence
    effective_quantity: str = "RBE"  # what an EFFECTIVE dose is weighted for ("RBE", "EQD2")
    fractions_applied: int | None = None  # a FRACTION dose multiplied by this many fractions
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def dose_unit(self) -> str:
        """The label of dose values: ``Gy``, ``Gy(RBE)`` (EFFECTIVE), or the DoseUnits when not GY (``RELATIVE``)."""
        if self.dose_units.upper() != "GY":
            return self.dose_units.upper() or "unknown unit"
        return f"Gy({self.effective_quantity})" if self.dose_type.upper() == "EFFECTIVE" else "Gy"

    @property
    def summation_note(self) -> str:
        """What DoseSummationType says the grid holds, when that is worth saying ("" for a PLAN dose)."""
        kind = self.dose_summation_type.upper()
        if self.fractions_applied is not None:
            return f"{kind} dose x {self.fractions_applied} fractions, as asked"
        if kind in _WHOLE_PLAN:
            return f"{kind}: {_WHOLE_PLAN[kind]}" if _WHOLE_PLAN[kind] else ""
        if kind in _PART_OF_PLAN:
            return f"{kind} dose: {_PART_OF_PLAN[kind]}{self._beams_text()}, not the plan dose"
        return f"DoseSummationType {kind!r} is not a DICOM value" if kind else "DoseSummationType missing"

    def _beams_text(self) -> str:
        numbers = self.referenced_beam_numbers
        if not numbers or not self.dose_summation_type.upper().startswith("BEAM"):
            return ""
        return f" (beam{'s' if len(numbers) > 1 else ''} {', '.join(str(b) for b in numbers)})"

    @property
    def plan_dose_problem(self) -> str:
        """Why goals for a whole plan cannot be judged on this grid ("" when they can: PLAN, MULTI_PLAN, ...)."""
        kind = self.dose_summation_type.upper()
        if self.fractions_applied is not None or kind in _WHOLE_PLAN or not kind:
            return ""
        if kind not in _PART_OF_PLAN:
            return f"{self.summation_note}: clinical goals are not judged on it"
        hint = "; give the number of fractions to scale it to the course" if kind == "FRACTION" else ""
        return (f"a {kind} dose{self._beams_text()} is not the plan dose: clinical goals are not judged on it{hint}")

    @property
    def origin_mm(self) -> tuple[float, float, float]:
        return self.grid.origin_mm

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return self.grid.spacing_mm

    @property
    def max_dose_gy(self) -> float:
        """Highest dose in the grid, Gy (computed once per grid, like :meth:`compute_support`)."""
        if "max" not in self._cache:
            self._cache["max"] = float(self.dose_gy.max())
        return cast(float, self._cache["max"])

    def compute_support(self) -> tuple[int, int, int, int, int, int] | None:
        """Half-open index box (k0, k1, j0, j1, i0, i1) of the voxels with non-zero dose; None when all are zero.

        Computed once per grid (``dose_gy`` is treated as read-only); outside the box the dose is exactly 0.
        """
        if "support" not in self._cache:
            nonzero = self.dose_gy != 0.0
            ranges: list[tuple[int, int] | None] = []
            for axes in ((1, 2), (0, 2), (0, 1)):
                hit = np.nonzero(nonzero.any(axis=axes))[0]
                ranges.append((int(hit[0]), int(hit[-1]) + 1) if hit.size else None)
            self._cache["support"] = None if ranges[0] is None else tuple(v for r in ranges if r is not None for v in r)
        return cast("tuple[int, int, int, int, int, int] | None", self._cache["support"])

    def compute_near_dose_mask(self) -> npt.NDArray[np.bool_]:
        """(nz, ny, nx) bool: a voxel or one of its 8 in-plane neighbours has non-zero dose (computed once per grid)."""
        if "near" not in self._cache:
            nonzero = self.dose_gy != 0.0
            rows = nonzero.copy()
            rows[:, 1:, :] |= nonzero[:, :-1, :]
            rows[:, :-1, :] |= nonzero[:, 1:, :]
            near = rows.copy()
            near[:, :, 1:] |= rows[:, :, :-1]
            near[:, :, :-1] |= rows[:, :, 1:]
            self._cache["near"] = near
        return cast("npt.NDArray[np.bool_]", self._cache["near"])

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.grid.to_dict(),
            "orientation": list(self.orientation),
            "dose_units": self.dose_units,
            "dose_type": self.dose_type,
            "dose_summation_type": self.dose_summation_type,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "max_dose_gy": self.max_dose_gy,
            "dose_unit": self.dose_unit,
            "summation_note": self.summation_note,
            "referenced_plan_uid": self.referenced_plan_uid,
            "referenced_beam_numbers": list(self.referenced_beam_numbers),
            "fractions_applied": self.fractions_applied,
        }


def check_absolute_dose(dose: DoseGrid) -> None:
    """DicomInputError naming DoseUnits unless the grid holds Gy (needed by DVH metrics and goals in Gy)."""
    units = dose.dose_units.upper()
    if units == "GY":
        return
    if units == "RELATIVE":
        problem = "is RELATIVE (relative to an unstated normalisation): DVH metrics and goals in Gy need GY"
    elif not units:
        problem = "missing: DVH metrics and goals in Gy need DoseUnits GY"
    else:
        problem = f"is {units!r}, not a DICOM value (GY or RELATIVE): not read as Gy"
    raise DicomInputError("DoseUnits", problem, dose.sop_instance_uid or None)


def scale_fraction_dose(dose: DoseGrid, fractions: int) -> DoseGrid:
    """A FRACTION dose (one fraction, Gy) times ``fractions``: the fraction group's course dose.

    RTError for any other DoseSummationType or a count below 1.
    """
    if isinstance(fractions, bool) or not isinstance(fractions, int) or fractions < 1:
        raise ValueError(f"the number of fractions must be an integer >= 1, got {fractions!r}")
    if dose.dose_summation_type.upper() != "FRACTION":
        raise GeometryError(f"only a FRACTION dose is scaled by a number of fractions; this RT Dose is "
                            f"{dose.dose_summation_type or 'without DoseSummationType'}")
    return replace(dose, dose_gy=dose.dose_gy * float(fractions), fractions_applied=fractions)


def _axis_of(direction: npt.NDArray[np.float64], orientation: tuple[float, ...]) -> tuple[int, int]:
    """(patient axis 0/1/2, sign ±1) of a unit direction that must be axis-aligned."""
    axis = int(np.argmax(np.abs(direction)))
    unit = np.zeros(3)
    unit[axis] = np.sign(direction[axis])
    if np.max(np.abs(direction - unit)) > _COSINE_TOLERANCE:
        raise GeometryError(
            f"ImageOrientationPatient {list(orientation)} is not axis-aligned; oblique dose grids are not supported"
        )
    return axis, int(unit[axis])


def _read_frame_offsets_mm(
    ds: Dataset, position: npt.NDArray[np.float64], normal_axis: int, normal_sign: int
) -> npt.NDArray[np.float64]:
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise DicomInputError("NumberOfFrames", "is not an integer") from None
    if frames == 1 and not ds.get("GridFrameOffsetVector"):
        return np.zeros(1)
    if not ds.get("GridFrameOffsetVector"):
        raise DicomInputError("GridFrameOffsetVector", f"missing for {frames} frames")
    offsets = np.asarray([float(v) for v in ds.GridFrameOffsetVector], dtype=np.float64)
    if offsets.size != frames:
        raise DicomInputError("GridFrameOffsetVector", f"has {offsets.size} values for {frames} frames")
    if offsets[0] != 0.0:  # absolute patient-z coordinates
        if normal_axis != 2:
            raise GeometryError("absolute GridFrameOffsetVector needs a slice normal along z")
        offsets = (offsets - position[2]) * normal_sign
    return offsets


def read_dose(ds: Dataset) -> DoseGrid:
    """Read an RT Dose dataset into a canonical :class:`DoseGrid` (Gy, mm); see module docstring."""
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "PixelData"):
        if keyword not in ds:
            raise DicomInputError(keyword)
    orientation = tuple(float(v) for v in ds.ImageOrientationPatient)
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    position = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
    # PixelSpacing is (between rows, between columns): along col_dir, along row_dir.
    row_pitch, col_pitch = (float(v) for v in ds.PixelSpacing)
    axes = [_axis_of(normal, orientation), _axis_of(col_dir, orientation), _axis_of(row_dir, orientation)]
    if len({a for a, _ in axes}) != 3:
        raise GeometryError(f"ImageOrientationPatient {list(orientation)} is degenerate")

    offsets = _read_frame_offsets_mm(ds, position, axes[0][0], axes[0][1])
    if offsets.size > 1:
        steps = np.diff(offsets)
        if np.max(np.abs(steps - steps[0])) > _FRAME_TOLERANCE_MM or steps[0] == 0.0:
            shown = ", ".join(f"{v:g}" for v in np.unique(steps.round(4))[:6])
            raise GeometryError(f"GridFrameOffsetVector is not uniformly spaced (frame steps {shown} mm): dose "
                                "grids with uneven frame spacing are not supported")
        frame_step = float(steps[0])
    else:
        frame_step = float(ds.get("SliceThickness") or 1.0)

    scaling = float(ds.get("DoseGridScaling", 1.0) or 1.0)
    try:
        stored = ds.pixel_array
    except (AttributeError, ValueError, NotImplementedError, RuntimeError) as exc:  # truncated, or no codec
        raise DicomInputError("PixelData", f"cannot be decoded ({type(exc).__name__})") from None
    if stored.ndim == 2:
        stored = stored[None]
    dose = np.multiply(stored, scaling, dtype=np.float64)  # axes: frame (normal), row (col_dir), column (row_dir)

    # Signed steps of the stored array axes in patient coordinates.
    steps_mm = [frame_step * axes[0][1], row_pitch * axes[1][1], col_pitch * axes[2][1]]
    first = position.copy()
    first[axes[0][0]] += offsets[0] * axes[0][1]
    origin = np.zeros(3)
    spacing = np.zeros(3)
    flips = []
    for array_axis, ((patient_axis, _), step) in enumerate(zip(axes, steps_mm, strict=True)):
        n = dose.shape[array_axis]
        start = first[patient_axis]
        if step < 0:
            start = start + step * (n - 1)
            flips.append(array_axis)
        origin[patient_axis] = start
        spacing[patient_axis] = abs(step)
    if flips:
        dose = np.flip(dose, axis=tuple(flips))
    # Permute the array axes into (z, y, x): array axis a holds patient axis axes[a][0].
    order = [next(a for a in range(3) if axes[a][0] == p) for p in (2, 1, 0)]
    dose = np.ascontiguousarray(np.transpose(dose, order))
    grid = VoxelGrid(
        origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing_mm=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        shape=(int(dose.shape[0]), int(dose.shape[1]), int(dose.shape[2])),  # dose is 3-D after the transpose
    )
    plan_uid, beam_numbers = _read_plan_reference(ds)
    return DoseGrid(
        dose_gy=dose,
        grid=grid,
        orientation=orientation,
        dose_units=str(ds.get("DoseUnits", "") or "").strip().upper(),
        dose_type=str(ds.get("DoseType", "") or "").strip().upper(),
        dose_summation_type=str(ds.get("DoseSummationType", "") or "").strip().upper(),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        referenced_plan_uid=plan_uid,
        referenced_beam_numbers=beam_numbers,
    )


def _read_plan_reference(ds: Dataset) -> tuple[str, tuple[int, ...]]:
    """(ReferencedSOPInstanceUID of the first ReferencedRTPlanSequence item, its referenced beam numbers)."""
    plans = ds.get("ReferencedRTPlanSequence") or []
    if not plans:
        return "", ()
    beams: list[int] = []
    for group in plans[0].get("ReferencedFractionGroupSequence") or []:
        for beam in group.get("ReferencedBeamSequence") or []:
            number = beam.get("ReferencedBeamNumber")
            if number is not None and str(number).strip().lstrip("-").isdigit():
                beams.append(int(number))
    return str(plans[0].get("ReferencedSOPInstanceUID", "") or ""), tuple(beams)


def _axis_weights(
    source: VoxelGrid, axis: int, targets_mm: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Linear-interpolation (lower index, upper index, upper weight, covered) along one axis."""
    n = source.shape[2 - axis]
    position = (targets_mm - source.origin_mm[axis]) / source.spacing_mm[axis]
    covered = (position >= -0.5 - 1e-9) & (position <= n - 0.5 + 1e-9)
    position = np.clip(position, 0.0, n - 1.0)
    lower = np.minimum(np.floor(position).astype(np.int64), max(n - 2, 0))
    upper = np.minimum(lower + 1, n - 1)
    weight = position - lower
    return lower, upper, weight, covered


def compute_dose_on_grid(dose: DoseGrid, grid: VoxelGrid) -> npt.NDArray[np.float64]:
    """The dose (Gy) trilinearly interpolated at the voxel centres of ``grid``, shape grid.shape.

    A target point is covered when it lies within the dose grid's voxel extent (voxel centres
    ± half a voxel); between the outermost dose voxel centres and that extent the edge value is
    used. Uncovered points are NaN, so callers can account for them explicitly.
    """
    data = dose.dose_gy
    lx, ux, wx, cx = _axis_weights(dose.grid, 0, grid.x_mm())
    ly, uy, wy, cy = _axis_weights(dose.grid, 1, grid.y_mm())
    lz, uz, wz, cz = _axis_weights(dose.grid, 2, grid.z_mm())
    # Slices first, then rows, then columns: each pass only touches what the target grid needs.
    along_z = data[lz] * (1.0 - wz)[:, None, None] + data[uz] * wz[:, None, None]
    along_y = along_z[:, ly, :] * (1.0 - wy)[None, :, None] + along_z[:, uy, :] * wy[None, :, None]
    result = along_y[:, :, lx] * (1.0 - wx) + along_y[:, :, ux] * wx
    covered = cz[:, None, None] & cy[None, :, None] & cx[None, None, :]
    return np.where(covered, result, np.nan)


#: Largest stored value of a 32-bit RT Dose pixel.
_UINT32_MAX = 2**32 - 1


def build_rt_dose(dose: DoseGrid, template: Dataset, *, summation_type: str = "MULTI_PLAN",
                  series_description: str = "Summed dose") -> Dataset:
    """An RT Dose dataset holding ``dose`` (Gy, canonical HFS axes), with the patient and study of ``template``.

    The new SOP Instance and Series UIDs are derived from the template's and the dose's content,
    so the same inputs give the same UIDs. Voxels without dose (NaN) are stored as 0 Gy.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RTDoseStorage, generate_uid

    values = np.nan_to_num(np.asarray(dose.dose_gy, dtype=np.float64), nan=0.0)
    if np.any(values < 0):
        raise GeometryError("a dose grid with negative values cannot be stored as RT Dose")
    scaling = max(float(values.max()), 1e-12) / _UINT32_MAX
    pixels = np.rint(values / scaling).astype("<u4")
    entropy = [str(template.get("SOPInstanceUID", "")), str(values.shape), f"{float(values.sum()):.9g}",
               summation_type]
    ds = copy_patient_study(template, Dataset(), also=FRAME_OF_REFERENCE_KEYWORDS)
    ds.SOPClassUID = RTDoseStorage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[*entropy, "instance"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*entropy, "series"])
    ds.Modality = "RTDOSE"
    ds.SeriesNumber = 900
    ds.SeriesDescription = series_description
    ds.Manufacturer = "OncoPACS"
    ds.InstanceNumber = 1
    nz, ny, nx = values.shape
    dz = dose.grid.spacing_mm[2]
    ds.ImagePositionPatient = [f"{v:.6g}" for v in dose.grid.origin_mm]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [f"{dose.grid.spacing_mm[1]:.6g}", f"{dose.grid.spacing_mm[0]:.6g}"]
    ds.SliceThickness = f"{dz:.6g}"
    ds.GridFrameOffsetVector = [f"{k * dz:.6g}" for k in range(nz)]
    ds.FrameIncrementPointer = 0x3004000C
    ds.NumberOfFrames = nz
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0
    ds.DoseUnits, ds.DoseType = dose.dose_units or "GY", dose.dose_type or "PHYSICAL"
    ds.DoseSummationType = summation_type
    ds.DoseGridScaling = f"{scaling:.10g}"
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds
