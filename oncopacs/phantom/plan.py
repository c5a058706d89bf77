"""RT Ion Plan (RTIonPlanStorage): a two-field pencil-beam-scanned proton plan to the PTV.

Beams enter laterally (gantry 90° from patient left, 270° from patient right, HFS) with the
isocentre at the PTV centre. Energy layers are placed every ``layer_spacing_mm`` of water
depth across the PTV; the nominal energy of a layer follows the Bragg-Kleeman rule
R[cm] = 0.0022 * E[MeV]^1.77 inverted, E = (R / 0.0022)^(1 / 1.77). Spots sit on a square
lattice (``spot_spacing_mm``, in the isocentre plane) inside the PTV cross-section at that
depth plus a 3 mm margin. Meterset weights are in MU; the beam meterset is their sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import RTDoseStorage, RTIonPlanStorage, RTStructureSetStorage

from oncopacs.phantom.anatomy import PhantomAnatomy
from oncopacs.phantom.common import build_base_dataset, build_reference, format_ds, format_position
from oncopacs.phantom.shapes import Sphere
from oncopacs.phantom.specs import PatientSpec, SeriesSpec, StudySpec
from oncopacs.uids import uid_for

TREATMENT_MACHINE = "PBS_GANTRY_1"
BRAGG_KLEEMAN_ALPHA_CM = 0.0022
BRAGG_KLEEMAN_P = 1.77


@dataclass(frozen=True)
class EnergyLayer:
    """One energy layer: nominal energy (MeV), spot (x, y) positions (mm) and weights (MU)."""

    energy_mev: float
    spot_positions_mm: tuple[tuple[float, float], ...]
    spot_weights_mu: tuple[float, ...]

    @property
    def meterset_mu(self) -> float:
        return sum(self.spot_weights_mu)


def compute_energy_for_range_mev(range_mm: float) -> float:
    """Proton energy (MeV) whose water range is ``range_mm`` (Bragg-Kleeman), to 0.1 MeV."""
    return round((range_mm / 10.0 / BRAGG_KLEEMAN_ALPHA_CM) ** (1.0 / BRAGG_KLEEMAN_P), 1)


def compute_energy_layers(
    ptv: Sphere, isocentre_depth_mm: float, *, layer_spacing_mm: float = 8.0, spot_spacing_mm: float = 7.0
) -> tuple[EnergyLayer, ...]:
    """Layers from distal to proximal covering a spherical PTV centred at ``isocentre_depth_mm``."""
    r = ptv.radius_mm
    n_layers = int(2 * r // layer_spacing_mm)
    first = isocentre_depth_mm + (n_layers - 1) * layer_spacing_mm / 2.0
    layers = []
    for i in range(n_layers):
        depth = first - i * layer_spacing_mm
        reach = math.sqrt(max(r * r - (depth - isocentre_depth_mm) ** 2, 0.0)) + 3.0
        n = int(reach // spot_spacing_mm)
        spots = tuple(
            (a * spot_spacing_mm, b * spot_spacing_mm)
            for b in range(-n, n + 1)
            for a in range(-n, n + 1)
            if math.hypot(a * spot_spacing_mm, b * spot_spacing_mm) <= reach
        )
        per_spot = round(0.2 + 0.6 * (n_layers - i) / n_layers, 4)  # distal layers weigh more
        layers.append(EnergyLayer(compute_energy_for_range_mev(depth), spots, (per_spot,) * len(spots)))
    return tuple(layers)


def _control_point(index: int, layer: EnergyLayer, cumulative: float, weights: list[float]) -> Dataset:
    cp = Dataset()
    cp.ControlPointIndex = index
    cp.NominalBeamEnergy = format_ds(layer.energy_mev)
    cp.CumulativeMetersetWeight = format_ds(round(cumulative, 4))
    cp.ScanSpotTuneID = "Spot1"
    cp.NumberOfScanSpotPositions = len(layer.spot_positions_mm)
    cp.ScanSpotPositionMap = [float(v) for xy in layer.spot_positions_mm for v in xy]
    cp.ScanSpotMetersetWeights = weights
    cp.ScanningSpotSize = [6.0, 6.0]
    cp.NumberOfPaintings = 1
    return cp


def build_ion_beam(
    number: int, name: str, gantry_angle: float, layers: tuple[EnergyLayer, ...], isocentre_mm: tuple[float, ...]
) -> Dataset:
    """IonBeamSequence item: MODULATED proton beam, two control points per energy layer."""
    beam = Dataset()
    beam.BeamNumber = number
    beam.BeamName = name
    beam.BeamDescription = f"PBS field at gantry {gantry_angle:g} deg"
    beam.BeamType = "STATIC"
    beam.RadiationType = "PROTON"
    beam.TreatmentMachineName = TREATMENT_MACHINE
    beam.PrimaryDosimeterUnit = "MU"
    beam.TreatmentDeliveryType = "TREATMENT"
    beam.ScanMode = "MODULATED"
    beam.VirtualSourceAxisDistances = [2000.0, 2000.0]
    for keyword in ("NumberOfWedges", "NumberOfCompensators", "NumberOfBoli", "NumberOfBlocks",
                    "NumberOfRangeShifters", "NumberOfLateralSpreadingDevices", "NumberOfRangeModulators"):
        setattr(beam, keyword, 0)
    beam.PatientSupportType = "TABLE"
    beam.ReferencedPatientSetupNumber = 1
    cps: list[Dataset] = []
    cumulative = 0.0
    for layer in layers:
        start = _control_point(len(cps), layer, cumulative, list(layer.spot_weights_mu))
        cumulative += layer.meterset_mu
        end = _control_point(len(cps) + 1, layer, cumulative, [0.0] * len(layer.spot_weights_mu))
        cps += [start, end]
    first = cps[0]
    first.GantryAngle = format_ds(gantry_angle)
    first.GantryRotationDirection = "NONE"
    first.GantryPitchAngle = 0.0
    first.GantryPitchRotationDirection = "NONE"
    first.BeamLimitingDeviceAngle = "0"
    first.BeamLimitingDeviceRotationDirection = "NONE"
    first.PatientSupportAngle = "0"
    first.PatientSupportRotationDirection = "NONE"
    first.TableTopPitchAngle = 0.0
    first.TableTopPitchRotationDirection = "NONE"
    first.TableTopRollAngle = 0.0
    first.TableTopRollRotationDirection = "NONE"
    first.IsocenterPosition = format_position(isocentre_mm)
    beam.NumberOfControlPoints = len(cps)
    beam.FinalCumulativeMetersetWeight = format_ds(round(cumulative, 4))
    beam.IonControlPointSequence = DicomSequence(cps)
    return beam


def build_rt_ion_plan(
    patient: PatientSpec,
    study: StudySpec,
    series: SeriesSpec,
    anatomy: PhantomAnatomy,
    rtstruct: Dataset,
    *,
    prescription_gy: float = 60.0,
    fractions: int = 30,
    treatment_site: str = "",
    dose_uid: str = "",
) -> Dataset:
    """A two-beam proton plan prescribing ``prescription_gy`` (Gy) in ``fractions`` to the PTV (TreatmentSite
    ``treatment_site`` when given; ReferencedDoseSequence naming the planning system's dose ``dose_uid`` when given)."""
    ptv = anatomy.ptv
    if not isinstance(ptv.solid, Sphere):
        raise ValueError("the phantom plan expects a spherical PTV")
    iso = ptv.solid.centre_mm
    sop_uid = uid_for(series.series_instance_uid, "rtplan")
    ds = build_base_dataset(RTIonPlanStorage, sop_uid, patient, study, series)
    ds.RTPlanLabel = "PROTON_PTV"
    ds.RTPlanName = "Phantom PBS"
    ds.RTPlanDescription = f"{prescription_gy:g} Gy in {fractions} fx, 2-field PBS"
    ds.RTPlanDate = series.series_date
    ds.RTPlanTime = series.series_time
    ds.RTPlanGeometry = "PATIENT"
    if treatment_site:
        ds.TreatmentSite = treatment_site
    ds.ReferencedStructureSetSequence = DicomSequence(
        [build_reference(RTStructureSetStorage, rtstruct.SOPInstanceUID)]
    )
    if dose_uid:
        ds.ReferencedDoseSequence = DicomSequence([build_reference(RTDoseStorage, dose_uid)])

    dose_ref = Dataset()
    dose_ref.DoseReferenceNumber = 1
    dose_ref.DoseReferenceUID = uid_for(sop_uid, "doseref", "1")
    dose_ref.DoseReferenceStructureType = "VOLUME"
    dose_ref.DoseReferenceDescription = ptv.name
    dose_ref.ReferencedROINumber = ptv.roi_number
    dose_ref.DoseReferenceType = "TARGET"
    dose_ref.TargetPrescriptionDose = format_ds(prescription_gy)
    ds.PrescriptionDescription = f"{ptv.name} {prescription_gy:g} Gy"
    ds.DoseReferenceSequence = DicomSequence([dose_ref])

    setup = Dataset()
    setup.PatientPosition = "HFS"
    setup.PatientSetupNumber = 1
    setup.SetupTechnique = "ISOCENTRIC"
    ds.PatientSetupSequence = DicomSequence([setup])

    beams, refs = [], []
    fields = (("L_LAT_G90", 90.0, 1.0), ("R_LAT_G270", 270.0, -1.0))  # entry from +x (left) / -x
    for number, (name, gantry, entry_x) in enumerate(fields, start=1):
        depth = anatomy.body.radius_mm - entry_x * (iso[0] - anatomy.body.centre_xy_mm[0])
        beam = build_ion_beam(number, name, gantry, compute_energy_layers(ptv.solid, depth), iso)
        beams.append(beam)
        ref = Dataset()
        ref.ReferencedBeamNumber = number
        ref.BeamDose = format_ds(round(prescription_gy / fractions / 2, 6))
        ref.BeamMeterset = beam.FinalCumulativeMetersetWeight
        refs.append(ref)
    group = Dataset()
    group.FractionGroupNumber = 1
    group.NumberOfFractionsPlanned = fractions
    group.NumberOfBeams = len(beams)
    group.NumberOfBrachyApplicationSetups = 0
    group.ReferencedBeamSequence = DicomSequence(refs)
    ds.FractionGroupSequence = DicomSequence([group])
    ds.IonBeamSequence = DicomSequence(beams)
    ds.ApprovalStatus = "APPROVED"
    ds.ReviewDate = series.series_date
    ds.ReviewTime = series.series_time
    ds.ReviewerName = "Oncologist^Phantom"
    return ds
