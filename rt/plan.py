"""RT Plan and RT Ion Plan: a JSON-serialisable summary of a treatment plan.

:func:`read_plan_summary` reads an RT Plan (photons, electrons) or an RT Ion Plan (protons, ions).
Units: doses in Gy, angles in degrees, positions and thicknesses in mm, energies in MeV (photon
nominal energies in MV), metersets in the beam's PrimaryDosimeterUnit (MU, MINUTE or NP).

Conventions:

- **Prescription.** ``prescription_gy`` is the TargetPrescriptionDose of the first dose reference
  (in DoseReferenceSequence order) whose DoseReferenceType is TARGET and that carries one; None
  when there is none. ``dose_per_fraction_gy`` is ``prescription_gy / fractions`` when both are
  known, else the sum of the BeamDose values of the first fraction group (when every referenced
  beam has one), else None.
- **Resolved prescription** (``prescription``, a :class:`Prescription` saying where it came
  from), the total dose goals relative to the prescription use: that TargetPrescriptionDose; else,
  summed over the fraction groups, a fraction group's ReferencedDoseReferenceSequence
  TargetPrescriptionDose x NumberOfFractionsPlanned (taken as per fraction, unless it equals the
  group's BeamDose sum x fractions, then as the group's total); else the BeamDose sum x
  NumberOfFractionsPlanned, with a note that it is the dose at the beams' specification points,
  not a stated prescription (beams without BeamDose and without meterset are set-up fields and
  ignored); else none. :func:`choose_prescription` lets a given value override it.
- **Fractions and metersets** come from the first fraction group (FractionGroupSequence[0]);
  a beam's meterset and dose are those of its ReferencedBeamSequence item there. The meterset
  unit is the beam's PrimaryDosimeterUnit, defaulting to MU (RT Plan) or NP (RT Ion Plan).
- **Angles and isocentre** are those of the first control point.
- **Energy layers** (ions): NominalBeamEnergy along the control points, an omitted value meaning
  "unchanged"; a layer is a run of consecutive control points with the same energy, so PBS's
  two control points per layer make one layer, and a revisited energy counts again.
- **Spots** (ions): ``spot_count`` is the number of scan spots with a non-zero meterset weight,
  summed over all control points (ScanSpotMetersetWeights). With the usual PBS convention (the
  layer's weights on its first control point, zeros on its second) this equals the sum of
  NumberOfScanSpotPositions over the layers' first control points.
- **Photon delivery hints**: ``gantry_rotates`` when GantryAngle changes across control points
  or a rotation direction CW/CC is set; ``mlc_moves`` when MLC leaf positions change.
- **Course context**: ``plan_date`` is RTPlanDate (DA ``YYYYMMDD``, None when absent or not a date);
  ``treatment_site`` is TreatmentSite, else the first TreatmentSiteCodeSequence item's CodeMeaning;
  ``diagnosis`` is AdmittingDiagnosesDescription (the Patient Study module the plan carries).
- Missing optional attributes give None or empty tuples; only a dataset that is not an RT Plan /
  RT Ion Plan raises :class:`~rt.errors.DicomInputError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from rt.errors import DicomInputError

RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
RT_ION_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.8"
_SOP_CLASSES = {RT_PLAN_STORAGE: "RTPLAN", RT_ION_PLAN_STORAGE: "RTIONPLAN"}
_MLC_TYPES = ("MLCX", "MLCY")


# --------------------------------------------------------------------------- value helpers
def _get(ds: Dataset | None, keyword: str) -> Any:
    """The value of ``keyword`` in ``ds`` or None (absent, empty or unreadable)."""
    if ds is None:
        return None
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - an unreadable optional attribute counts as missing
        return None
    if value is None or value == "":
        return None
    return value


def _str(ds: Dataset | None, keyword: str) -> str | None:
    value = _get(ds, keyword)
    return None if value is None else str(value).strip() or None


def _float(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else round(number)


def _floats(value: Any) -> tuple[float, ...]:
    """A multi-valued numeric attribute (or a single value) as floats; () when unusable."""
    if value is None or value == "":
        return ()
    items = [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else value
    out = []
    for item in items:
        number = _float(item)
        if number is None:
            return ()
        out.append(number)
    return tuple(out)


def _seq(ds: Dataset | None, keyword: str) -> list[Dataset]:
    value = _get(ds, keyword)
    return list(value) if value is not None else []


def _date(ds: Dataset | None, keyword: str) -> str | None:
    """A DA value as ``YYYYMMDD`` (None when absent or not eight digits)."""
    text = (_str(ds, keyword) or "").replace(".", "")
    return text if len(text) == 8 and text.isdigit() else None


def _code_meaning(items: list[Dataset]) -> str | None:
    return _str(items[0], "CodeMeaning") if items else None


# --------------------------------------------------------------------------- data classes
@dataclass(frozen=True, slots=True)
class DoseReference:
    """One DoseReferenceSequence item; ``target_prescription_dose_gy`` in Gy (None if absent)."""

    number: int | None
    reference_type: str | None
    structure_type: str | None
    referenced_roi_number: int | None
    description: str | None
    target_prescription_dose_gy: float | None
    delivery_maximum_dose_gy: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "reference_type": self.reference_type,
            "structure_type": self.structure_type,
            "referenced_roi_number": self.referenced_roi_number,
            "description": self.description,
            "target_prescription_dose_gy": self.target_prescription_dose_gy,
            "delivery_maximum_dose_gy": self.delivery_maximum_dose_gy,
        }


#: Where a :class:`Prescription` came from.
RX_DOSE_REFERENCE = "dose_reference"
RX_FRACTION_GROUP = "fraction_group"
RX_BEAM_DOSE = "beam_dose"
RX_GIVEN = "given"
RX_NONE = "none"
#: Relative agreement taken as "the same dose" when telling a per-fraction from a total dose.
_SAME_DOSE = 0.02


@dataclass(frozen=True, slots=True)
class Prescription:
    """A total prescribed dose (Gy; None: unknown) and where it came from.

    source: RX_DOSE_REFERENCE, RX_FRACTION_GROUP, RX_BEAM_DOSE, RX_GIVEN or RX_NONE; description:
    what was read (``plan DoseReference 1 'PTV' TargetPrescriptionDose``); note: caveats.
    """

    dose_gy: float | None
    source: str
    description: str
    fractions: int | None = None
    note: str = ""

    def describe(self) -> str:
        """``60 Gy from plan DoseReference 1 'PTV' TargetPrescriptionDose``-style text (with the note)."""
        text = self.description if self.dose_gy is None else f"{round(self.dose_gy, 2):g} Gy from {self.description}"
        return f"{text} ({self.note})" if self.note else text

    def to_dict(self) -> dict[str, Any]:
        return {"dose_gy": self.dose_gy, "source": self.source, "description": self.description,
                "fractions": self.fractions, "note": self.note, "text": self.describe()}


NO_PRESCRIPTION = Prescription(None, RX_NONE, "no prescription")


@dataclass(frozen=True, slots=True)
class RangeShifter:
    """A range shifter of an ion beam, with its first setting: WET and isocentre distance in mm."""

    number: int | None
    shifter_id: str | None
    shifter_type: str | None
    setting: str | None
    water_equivalent_thickness_mm: float | None
    isocentre_to_range_shifter_distance_mm: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "id": self.shifter_id,
            "type": self.shifter_type,
            "setting": self.setting,
            "water_equivalent_thickness_mm": self.water_equivalent_thickness_mm,
            "isocentre_to_range_shifter_distance_mm": self.isocentre_to_range_shifter_distance_mm,
        }


@dataclass(frozen=True, slots=True)
class BeamDevice:
    """A lateral spreading device or range modulator of an ion beam (number, ID, type)."""

    number: int | None
    device_id: str | None
    device_type: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "id": self.device_id, "type": self.device_type}


@dataclass(frozen=True, slots=True)
class BeamSummary:
    """One beam of a plan. Angles in degrees, isocentre in mm, energies MeV (photons: MV).

    meterset: BeamMeterset of the first fraction group, in ``meterset_unit``; beam_dose_gy: its
    BeamDose (Gy per fraction). Photon-only fields are None/False for ions and vice versa.
    """

    number: int | None
    name: str | None
    description: str | None
    beam_type: str | None
    radiation_type: str | None
    treatment_machine: str | None
    treatment_delivery_type: str | None
    gantry_angle_deg: float | None
    couch_angle_deg: float | None
    collimator_angle_deg: float | None
    isocentre_mm: tuple[float, float, float] | None
    meterset: float | None
    meterset_unit: str
    beam_dose_gy: float | None
    control_point_count: int
    # photons / electrons
    nominal_energy_mv: float | None = None
    nominal_energy_mev: float | None = None
    has_mlc: bool = False
    mlc_leaf_pairs: int | None = None
    mlc_moves: bool = False
    gantry_rotates: bool = False
    # ions
    scan_mode: str | None = None
    energy_layers_mev: tuple[float, ...] = ()
    spot_count: int | None = None
    range_shifters: tuple[RangeShifter, ...] = ()
    snout_id: str | None = None
    snout_position_mm: float | None = None
    lateral_spreading_devices: tuple[BeamDevice, ...] = ()
    range_modulators: tuple[BeamDevice, ...] = ()

    @property
    def energy_layer_count(self) -> int:
        return len(self.energy_layers_mev)

    @property
    def min_energy_mev(self) -> float | None:
        return min(self.energy_layers_mev) if self.energy_layers_mev else None

    @property
    def max_energy_mev(self) -> float | None:
        return max(self.energy_layers_mev) if self.energy_layers_mev else None

    @property
    def technique(self) -> str | None:
        """Photon/electron delivery hint: VMAT, ARC, IMRT or STATIC; None for ions."""
        if self.scan_mode is not None or self.energy_layers_mev:
            return None
        if self.gantry_rotates:
            return "VMAT" if self.mlc_moves else "ARC"
        return "IMRT" if self.mlc_moves else "STATIC"

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "description": self.description,
            "beam_type": self.beam_type,
            "radiation_type": self.radiation_type,
            "treatment_machine": self.treatment_machine,
            "treatment_delivery_type": self.treatment_delivery_type,
            "gantry_angle_deg": self.gantry_angle_deg,
            "couch_angle_deg": self.couch_angle_deg,
            "collimator_angle_deg": self.collimator_angle_deg,
            "isocentre_mm": list(self.isocentre_mm) if self.isocentre_mm is not None else None,
            "meterset": self.meterset,
            "meterset_unit": self.meterset_unit,
            "beam_dose_gy": self.beam_dose_gy,
            "control_point_count": self.control_point_count,
            "nominal_energy_mv": self.nominal_energy_mv,
            "nominal_energy_mev": self.nominal_energy_mev,
            "has_mlc": self.has_mlc,
            "mlc_leaf_pairs": self.mlc_leaf_pairs,
            "mlc_moves": self.mlc_moves,
            "gantry_rotates": self.gantry_rotates,
            "technique": self.technique,
            "scan_mode": self.scan_mode,
            "energy_layers_mev": list(self.energy_layers_mev),
            "energy_layer_count": self.energy_layer_count,
            "min_energy_mev": self.min_energy_mev,
            "max_energy_mev": self.max_energy_mev,
            "spot_count": self.spot_count,
            "range_shifters": [r.to_dict() for r in self.range_shifters],
            "snout_id": self.snout_id,
            "snout_position_mm": self.snout_position_mm,
            "lateral_spreading_devices": [d.to_dict() for d in self.lateral_spreading_devices],
            "range_modulators": [d.to_dict() for d in self.range_modulators],
        }


@dataclass(frozen=True, slots=True)
class PlanSummary:
    """An RT (Ion) Plan: identification, prescription (Gy), fractionation and beams."""

    sop_class: str  # "RTPLAN" or "RTIONPLAN"
    sop_instance_uid: str | None
    label: str | None
    name: str | None
    intent: str | None
    approval_status: str | None
    radiation_type: str | None  # the beams' type; "MIXED" when they differ
    frame_of_reference_uid: str | None
    referenced_structure_set_uid: str | None
    fractions: int | None
    prescription_gy: float | None
    dose_per_fraction_gy: float | None
    dose_references: tuple[DoseReference, ...]
    beams: tuple[BeamSummary, ...]
    prescription: Prescription = field(default=NO_PRESCRIPTION)
    plan_date: str | None = None  # RTPlanDate, DA YYYYMMDD
    treatment_site: str | None = None
    diagnosis: str | None = None  # AdmittingDiagnosesDescription

    @property
    def beam_count(self) -> int:
        return len(self.beams)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sop_class": self.sop_class,
            "sop_instance_uid": self.sop_instance_uid,
            "label": self.label,
            "name": self.name,
            "intent": self.intent,
            "approval_status": self.approval_status,
            "radiation_type": self.radiation_type,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "referenced_structure_set_uid": self.referenced_structure_set_uid,
            "fractions": self.fractions,
            "prescription_gy": self.prescription_gy,
            "dose_per_fraction_gy": self.dose_per_fraction_gy,
            "dose_references": [d.to_dict() for d in self.dose_references],
            "beam_count": self.beam_count,
            "beams": [b.to_dict() for b in self.beams],
            "prescription": self.prescription.to_dict(),
            "plan_date": self.plan_date,
            "treatment_site": self.treatment_site,
            "diagnosis": self.diagnosis,
        }


# --------------------------------------------------------------------------- readers
def _read_dose_reference(item: Dataset) -> DoseReference:
    return DoseReference(
        number=_int(_get(item, "DoseReferenceNumber")),
        reference_type=_str(item, "DoseReferenceType"),
        structure_type=_str(item, "DoseReferenceStructureType"),
        referenced_roi_number=_int(_get(item, "ReferencedROINumber")),
        description=_str(item, "DoseReferenceDescription"),
        target_prescription_dose_gy=_float(_get(item, "TargetPrescriptionDose")),
        delivery_maximum_dose_gy=_float(_get(item, "DeliveryMaximumDose")),
    )


def _read_energy_layers_mev(control_points: list[Dataset]) -> tuple[float, ...]:
    """Energies of the runs of consecutive control points with equal energy (omitted = unchanged)."""
    layers: list[float] = []
    current: float | None = None
    for cp in control_points:
        energy = _float(_get(cp, "NominalBeamEnergy"))
        if energy is None:
            energy = current
        if energy is not None and energy != current:
            layers.append(energy)
        current = energy
    return tuple(layers)


def _count_spots(control_points: list[Dataset]) -> int | None:
    """Spots with a non-zero meterset weight over all control points; None when no weights exist."""
    total, seen = 0, False
    for cp in control_points:
        weights = _floats(_get(cp, "ScanSpotMetersetWeights"))
        if weights:
            seen = True
            total += sum(1 for w in weights if w != 0.0)
    return total if seen else None


def _read_range_shifters(beam: Dataset, control_points: list[Dataset]) -> tuple[RangeShifter, ...]:
    settings: dict[int | None, Dataset] = {}
    for cp in control_points:
        for item in _seq(cp, "RangeShifterSettingsSequence"):
            settings.setdefault(_int(_get(item, "ReferencedRangeShifterNumber")), item)
    shifters = []
    for item in _seq(beam, "RangeShifterSequence"):
        number = _int(_get(item, "RangeShifterNumber"))
        setting = settings.get(number)
        shifters.append(
            RangeShifter(
                number=number,
                shifter_id=_str(item, "RangeShifterID"),
                shifter_type=_str(item, "RangeShifterType"),
                setting=_str(setting, "RangeShifterSetting"),
                water_equivalent_thickness_mm=_float(_get(setting, "RangeShifterWaterEquivalentThickness")),
                isocentre_to_range_shifter_distance_mm=_float(_get(setting, "IsocenterToRangeShifterDistance")),
            )
        )
    return tuple(shifters)


def _read_devices(beam: Dataset, sequence: str, prefix: str) -> tuple[BeamDevice, ...]:
    return tuple(
        BeamDevice(
            number=_int(_get(item, f"{prefix}Number")),
            device_id=_str(item, f"{prefix}ID"),
            device_type=_str(item, f"{prefix}Type"),
        )
        for item in _seq(beam, sequence)
    )


def _read_mlc(beam: Dataset, control_points: list[Dataset]) -> tuple[bool, int | None, bool]:
    """(has MLC, leaf pairs, leaf positions change across control points)."""
    mlc = [d for d in _seq(beam, "BeamLimitingDeviceSequence") if _str(d, "RTBeamLimitingDeviceType") in _MLC_TYPES]
    if not mlc:
        return False, None, False
    pairs = _int(_get(mlc[0], "NumberOfLeafJawPairs"))
    positions = []
    for cp in control_points:
        for item in _seq(cp, "BeamLimitingDevicePositionSequence"):
            if _str(item, "RTBeamLimitingDeviceType") in _MLC_TYPES:
                positions.append(_floats(_get(item, "LeafJawPositions")))
    moves = any(p != positions[0] for p in positions[1:])
    return True, pairs, moves


def _gantry_rotates(control_points: list[Dataset]) -> bool:
    angles = {a for a in (_float(_get(cp, "GantryAngle")) for cp in control_points) if a is not None}
    directions = {_str(cp, "GantryRotationDirection") for cp in control_points}
    return len(angles) > 1 or bool(directions & {"CW", "CC"})


def _read_beam(beam: Dataset, ion: bool, references: dict[int | None, Dataset]) -> BeamSummary:
    control_points = _seq(beam, "IonControlPointSequence" if ion else "ControlPointSequence")
    first = control_points[0] if control_points else None
    number = _int(_get(beam, "BeamNumber"))
    reference = references.get(number)
    radiation = _str(beam, "RadiationType")
    iso = _floats(_get(first, "IsocenterPosition"))
    energy = _float(_get(first, "NominalBeamEnergy"))
    common: dict[str, Any] = {
        "number": number,
        "name": _str(beam, "BeamName"),
        "description": _str(beam, "BeamDescription"),
        "beam_type": _str(beam, "BeamType"),
        "radiation_type": radiation,
        "treatment_machine": _str(beam, "TreatmentMachineName"),
        "treatment_delivery_type": _str(beam, "TreatmentDeliveryType"),
        "gantry_angle_deg": _float(_get(first, "GantryAngle")),
        "couch_angle_deg": _float(_get(first, "PatientSupportAngle")),
        "collimator_angle_deg": _float(_get(first, "BeamLimitingDeviceAngle")),
        "isocentre_mm": (iso[0], iso[1], iso[2]) if len(iso) == 3 else None,
        "meterset": _float(_get(reference, "BeamMeterset")),
        "meterset_unit": _str(beam, "PrimaryDosimeterUnit") or ("NP" if ion else "MU"),
        "beam_dose_gy": _float(_get(reference, "BeamDose")),
        "control_point_count": len(control_points),
    }
    if ion:
        snouts = _seq(beam, "SnoutSequence")
        snout_position = next(
            (p for p in (_float(_get(cp, "SnoutPosition")) for cp in control_points) if p is not None), None
        )
        return BeamSummary(
            **common,
            nominal_energy_mev=energy,
            scan_mode=_str(beam, "ScanMode"),
            energy_layers_mev=_read_energy_layers_mev(control_points),
            spot_count=_count_spots(control_points),
            range_shifters=_read_range_shifters(beam, control_points),
            snout_id=_str(snouts[0], "SnoutID") if snouts else None,
            snout_position_mm=snout_position,
            lateral_spreading_devices=_read_devices(beam, "LateralSpreadingDeviceSequence", "LateralSpreadingDevice"),
            range_modulators=_read_devices(beam, "RangeModulatorSequence", "RangeModulator"),
        )
    has_mlc, leaf_pairs, mlc_moves = _read_mlc(beam, control_points)
    return BeamSummary(
        **common,
        nominal_energy_mv=energy if radiation == "PHOTON" else None,
        nominal_energy_mev=energy if radiation != "PHOTON" else None,
        has_mlc=has_mlc,
        mlc_leaf_pairs=leaf_pairs,
        mlc_moves=mlc_moves,
        gantry_rotates=_gantry_rotates(control_points),
    )


def _plan_radiation_type(beams: tuple[BeamSummary, ...]) -> str | None:
    treatment = [b for b in beams if b.treatment_delivery_type != "SETUP"] or list(beams)
    kinds = {b.radiation_type for b in treatment if b.radiation_type}
    if not kinds:
        return None
    return kinds.pop() if len(kinds) == 1 else "MIXED"


def _group_beam_dose_gy(group: Dataset) -> float | None:
    """Sum of the group's BeamDose (Gy per fraction); None when a beam with a meterset has none."""
    total, seen = 0.0, False
    for item in _seq(group, "ReferencedBeamSequence"):
        dose = _float(_get(item, "BeamDose"))
        if dose is None:
            if _float(_get(item, "BeamMeterset")):  # a treatment beam without its dose: no sum
                return None
            continue  # a set-up field
        total, seen = total + dose, True
    return total if seen else None


def _is_dose(value: float | None) -> bool:
    """A usable prescribed dose: finite and above 0 Gy (a 0, negative or NaN value counts as absent)."""
    return value is not None and math.isfinite(value) and value > 0.0


def _from_dose_reference(references: tuple[DoseReference, ...], fractions: int | None) -> Prescription | None:
    targets = [d for d in references if d.reference_type == "TARGET" and _is_dose(d.target_prescription_dose_gy)]
    if not targets:
        return None
    first = targets[0]
    label = f" {first.description!r}" if first.description else ""
    others = sorted({d.target_prescription_dose_gy for d in targets[1:] if d.target_prescription_dose_gy is not None}
                    - {first.target_prescription_dose_gy})
    note = f"other TARGET dose references ({', '.join(f'{v:g}' for v in others)} Gy) not used" if others else ""
    return Prescription(first.target_prescription_dose_gy, RX_DOSE_REFERENCE,
                        f"plan DoseReference {first.number}{label} TargetPrescriptionDose", fractions, note)


def _from_fraction_groups(groups: list[Dataset]) -> Prescription | None:
    total, fractions, parts, notes = 0.0, 0, [], []
    for group in groups:
        items = [i for i in _seq(group, "ReferencedDoseReferenceSequence")
                 if _is_dose(_float(_get(i, "TargetPrescriptionDose")))]
        count = _int(_get(group, "NumberOfFractionsPlanned"))
        if not items or not count or count < 1:
            continue
        dose = _float(_get(items[0], "TargetPrescriptionDose")) or 0.0
        number = _int(_get(group, "FractionGroupNumber"))
        beams = _group_beam_dose_gy(group)
        if count > 1 and beams and abs(dose - beams * count) <= _SAME_DOSE * dose \
                and abs(dose - beams) > _SAME_DOSE * dose:
            total += dose
            notes.append(f"group {number}'s {dose:g} Gy equals its BeamDose sum x {count} fractions: read as its total")
        else:
            total += dose * count
        fractions += count
        parts.append(f"fraction group {number} ReferencedDoseReference "
                     f"{_int(_get(items[0], 'ReferencedDoseReferenceNumber'))} TargetPrescriptionDose x {count}")
    if not parts:
        return None
    return Prescription(total, RX_FRACTION_GROUP, "plan " + " + ".join(parts), fractions, "; ".join(notes))


def _from_beam_doses(groups: list[Dataset]) -> Prescription | None:
    total, fractions, parts = 0.0, 0, []
    for group in groups:
        beams, count = _group_beam_dose_gy(group), _int(_get(group, "NumberOfFractionsPlanned"))
        if beams is None or not _is_dose(beams) or not count or count < 1:
            return None
        total, fractions = total + beams * count, fractions + count
        parts.append(f"fraction group {_int(_get(group, 'FractionGroupNumber'))} BeamDose sum x {count}")
    if not parts:
        return None
    return Prescription(total, RX_BEAM_DOSE, "plan " + " + ".join(parts), fractions,
                        "the dose at the beams' dose specification points, not a stated prescription")


def read_prescription(ds: Dataset, dose_references: tuple[DoseReference, ...] | None = None) -> Prescription:
    """The plan's total prescription and its source (rules under "Resolved prescription" above)."""
    references = dose_references if dose_references is not None else tuple(
        _read_dose_reference(item) for item in _seq(ds, "DoseReferenceSequence"))
    groups = _seq(ds, "FractionGroupSequence")
    fractions = _int(_get(groups[0], "NumberOfFractionsPlanned")) if groups else None
    found = (_from_dose_reference(references, fractions) or _from_fraction_groups(groups)
             or _from_beam_doses(groups))
    found = found or Prescription(None, RX_NONE, "no prescription in the plan (no TARGET TargetPrescriptionDose, "
                                                 "fraction group dose or BeamDose)", fractions)
    unusable = [d for d in references if d.reference_type == "TARGET" and d.target_prescription_dose_gy is not None
                and not _is_dose(d.target_prescription_dose_gy)]
    if unusable and found.source != RX_DOSE_REFERENCE:
        ignored = ", ".join(f"DoseReference {d.number} TargetPrescriptionDose {d.target_prescription_dose_gy:g}"
                            for d in unusable)
        found = replace(found, note="; ".join(n for n in (found.note, f"{ignored} ignored: not a dose") if n))
    return found


def choose_prescription(plan: Prescription | None, given_gy: float | None, given_as: str = "given") -> Prescription:
    """``given_gy`` (Gy, described as ``given_as``, e.g. ``--prescription``) when set, else the plan's; else none.

    A given value that differs from the plan's says so in its note.
    """
    if given_gy is not None:
        if not math.isfinite(given_gy) or given_gy <= 0.0:
            raise ValueError(f"a prescription must be a positive dose in Gy, got {given_gy!r}")
        note = ""
        if plan is not None and plan.dose_gy is not None and abs(plan.dose_gy - given_gy) > 1e-6 * given_gy:
            note = f"overrides the plan's {plan.dose_gy:g} Gy ({plan.description})"
        return Prescription(given_gy, RX_GIVEN, given_as, plan.fractions if plan else None, note)
    return plan if plan is not None else Prescription(None, RX_NONE, "no prescription (no RT Plan)")


def read_plan_summary(ds: Dataset) -> PlanSummary:
    """Summarise an RT Plan or RT Ion Plan dataset (Gy, degrees, mm, MeV); see module docstring.

    Raises :class:`~rt.errors.DicomInputError` (keyword SOPClassUID) for any other SOP class.
    """
    sop_class_uid = str(_get(ds, "SOPClassUID") or "")
    if sop_class_uid not in _SOP_CLASSES:
        name = UID(sop_class_uid).name if sop_class_uid else "missing"
        raise DicomInputError("SOPClassUID", f"is {name} ({sop_class_uid or 'none'}), not an RT Plan or RT Ion Plan")
    sop_class = _SOP_CLASSES[sop_class_uid]
    ion = sop_class == "RTIONPLAN"

    groups = _seq(ds, "FractionGroupSequence")
    group = groups[0] if groups else None
    references: dict[int | None, Dataset] = {}
    for item in _seq(group, "ReferencedBeamSequence"):
        references.setdefault(_int(_get(item, "ReferencedBeamNumber")), item)
    fractions = _int(_get(group, "NumberOfFractionsPlanned"))

    beams = tuple(_read_beam(b, ion, references) for b in _seq(ds, "IonBeamSequence" if ion else "BeamSequence"))
    dose_references = tuple(_read_dose_reference(item) for item in _seq(ds, "DoseReferenceSequence"))
    prescription = next(
        (
            d.target_prescription_dose_gy
            for d in dose_references
            if d.reference_type == "TARGET" and d.target_prescription_dose_gy is not None
        ),
        None,
    )
    per_fraction: float | None
    if prescription is not None and fractions:
        per_fraction = prescription / fractions
    else:
        beam_doses = [_float(_get(item, "BeamDose")) for item in references.values()]
        known = [dose for dose in beam_doses if dose is not None]
        per_fraction = sum(known) if beam_doses and len(known) == len(beam_doses) else None

    structure_sets = _seq(ds, "ReferencedStructureSetSequence")
    return PlanSummary(
        sop_class=sop_class,
        sop_instance_uid=_str(ds, "SOPInstanceUID"),
        label=_str(ds, "RTPlanLabel"),
        name=_str(ds, "RTPlanName"),
        intent=_str(ds, "PlanIntent"),
        approval_status=_str(ds, "ApprovalStatus"),
        radiation_type=_plan_radiation_type(beams),
        frame_of_reference_uid=_str(ds, "FrameOfReferenceUID"),
        referenced_structure_set_uid=_str(structure_sets[0], "ReferencedSOPInstanceUID") if structure_sets else None,
        fractions=fractions,
        prescription_gy=prescription,
        dose_per_fraction_gy=per_fraction,
        dose_references=dose_references,
        beams=beams,
        prescription=read_prescription(ds, dose_references),
        plan_date=_date(ds, "RTPlanDate"),
        treatment_site=_str(ds, "TreatmentSite") or _code_meaning(_seq(ds, "TreatmentSiteCodeSequence")),
        diagnosis=_str(ds, "AdmittingDiagnosesDescription"),
    )
