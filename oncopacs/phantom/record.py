"""RT Ion Beams Treatment Records (RTIonBeamsTreatmentRecordStorage): one per delivered fraction of a phantom plan.

Each record carries the RT General Treatment Record module (TreatmentDate, TreatmentTime, the
ReferencedRTPlanSequence to the plan) and a Treatment Session Ion Beam item per beam of the plan with
its CurrentFractionNumber and the planned meterset delivered in full (MU).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import RTIonBeamsTreatmentRecordStorage, RTIonPlanStorage

from oncopacs.phantom.common import build_base_dataset, build_reference, format_ds
from oncopacs.phantom.plan import TREATMENT_MACHINE
from oncopacs.phantom.specs import PatientSpec, SeriesSpec, StudySpec
from oncopacs.uids import uid_for


def _beam_session(beam: Dataset, meterset: str, fraction: int) -> Dataset:
    item = Dataset()
    item.ReferencedBeamNumber = beam.BeamNumber
    item.BeamName = beam.BeamName
    item.BeamType = beam.BeamType
    item.RadiationType = beam.RadiationType
    item.ScanMode = beam.ScanMode
    item.TreatmentDeliveryType = "TREATMENT"
    item.TreatmentTerminationStatus = "NORMAL"
    item.CurrentFractionNumber = fraction
    item.PrimaryDosimeterUnit = "MU"
    item.SpecifiedPrimaryMeterset = meterset
    item.DeliveredPrimaryMeterset = meterset
    item.NumberOfControlPoints = 0
    return item


def build_treatment_records(patient: PatientSpec, study: StudySpec, series: SeriesSpec, plan: Dataset,
                            days: Sequence[date], treatment_time: str = "081500") -> list[Dataset]:
    """One record per day of ``days`` (fraction 1, 2, ... in that order) delivering every beam of ``plan``."""
    metersets = {ref.ReferencedBeamNumber: str(ref.BeamMeterset)
                 for ref in plan.FractionGroupSequence[0].ReferencedBeamSequence}
    records = []
    for fraction, day in enumerate(days, start=1):
        ds = build_base_dataset(RTIonBeamsTreatmentRecordStorage, uid_for(series.series_instance_uid, "record",
                                                                            str(fraction)),
                                patient, study, series, instance_number=fraction)
        del ds.FrameOfReferenceUID, ds.PositionReferenceIndicator  # a treatment record has no frame of reference
        ds.TreatmentDate = day.strftime("%Y%m%d")
        ds.TreatmentTime = treatment_time
        ds.ReferencedRTPlanSequence = DicomSequence([build_reference(RTIonPlanStorage, plan.SOPInstanceUID)])
        machine = Dataset()
        machine.TreatmentMachineName = TREATMENT_MACHINE
        machine.Manufacturer = ds.Manufacturer
        machine.InstitutionName = ds.InstitutionName
        ds.TreatmentMachineSequence = DicomSequence([machine])
        ds.TreatmentSessionIonBeamSequence = DicomSequence(
            [_beam_session(beam, metersets.get(beam.BeamNumber, format_ds(0.0)), fraction)
             for beam in plan.IonBeamSequence])
        records.append(ds)
    return records
