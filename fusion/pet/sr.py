"""PET measurements and response categories as a DICOM SR measurement report (TID 1500, highdicom).

One Comprehensive 3D SR per time point. Each ROI is a TID 1501 measurement group (tracking
identifier = ROI name) holding, as TID 300 measurements:

- SUVmax / SUVmean / SUVpeak: concept SUVbw (DCM 126401), SUVlbm (126402) or SUVbsa (126403) with
  derivation Maximum (SCT 56851009), Mean (SCT 373098007) or Peak Value Within ROI (DCM 126031);
  units ``{SUVbw}g/ml``, ``{SUVlbm}g/ml``, ``{SUVbsa}cm2/ml``;
- SULpeak: SUVlbm, Peak Value Within ROI, method "Janmahasatian" (DCM 126414);
- MTV: Metabolic Volume (DCM 126032, cm3, 41 % of SUVmax); TLG: Total Lesion Glycolysis (DCM 126033, g);
- CT volume (SCT 118565006, cm3) and longest diameter (SCT 81827009, mm) when given.

Response categories (PERCIST 1.0, EORTC 1999, RECIST-style) are qualitative evaluations of a
"Response" group; their codes use the private coding scheme ``99ONCOPACS``. The time point
(label and order) is a TID 1502 context on every group. :func:`read_pet_report` reads the values
back from any such SR.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from fusion.pet.stats import RoiStats

SCHEME = "99ONCOPACS"
SUV_CONCEPTS = {"bw": Code("126401", "DCM", "SUVbw"), "lbm": Code("126402", "DCM", "SUVlbm"),
                "bsa": Code("126403", "DCM", "SUVbsa")}
SUV_UNITS = {"bw": Code("{SUVbw}g/ml", "UCUM", "Standardized Uptake Value body weight"),
             "lbm": Code("{SUVlbm}g/ml", "UCUM", "Standardized Uptake Value lean body mass"),
             "bsa": Code("{SUVbsa}cm2/ml", "UCUM", "Standardized Uptake Value body surface area")}
PEAK = codes.DCM.PeakValueWithinROI
RESPONSE_CONCEPTS = {"PERCIST 1.0": Code("PERCIST", SCHEME, "PERCIST 1.0 response"),
                     "EORTC 1999": Code("EORTC", SCHEME, "EORTC 1999 PET response"),
                     "RECIST": Code("RECIST", SCHEME, "RECIST-style CT response")}
CATEGORY_MEANINGS = {"CMR": "Complete metabolic response", "PMR": "Partial metabolic response",
                     "SMD": "Stable metabolic disease", "PMD": "Progressive metabolic disease",
                     "CR": "Complete response", "PR": "Partial response", "SD": "Stable disease",
                     "PD": "Progressive disease"}
PROCEDURE = Code("44136-0", "LN", "PET whole body")


def _measurement(name: Code, value: float, unit: Code, derivation: Code | None = None,
                 method: Code | None = None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, derivation=derivation, method=method)


def build_roi_measurements(stats: RoiStats, *, ct_volume_cc: float | None = None,
                           longest_diameter_mm: float | None = None) -> list[hd.sr.Measurement]:
    """The TID 300 measurements of one ROI's statistics."""
    concept, unit = SUV_CONCEPTS[stats.suv_type], SUV_UNITS[stats.suv_type]
    items = [
        _measurement(concept, stats.suv_max, unit, codes.SCT.Maximum),
        _measurement(concept, stats.suv_mean, unit, codes.SCT.Mean),
        _measurement(concept, stats.suv_peak, unit, PEAK),
        _measurement(codes.DCM.MetabolicVolume, stats.mtv41_cc, codes.UCUM.CubicCentimeter),
        _measurement(codes.DCM.TotalLesionGlycolysis, stats.tlg41, Code("g", "UCUM", "gram")),
    ]
    if stats.sul_peak is not None:
        items.append(_measurement(SUV_CONCEPTS["lbm"], stats.sul_peak, SUV_UNITS["lbm"], PEAK,
                                  codes.DCM.SUVLeanBodyMassCalculationJanmahasatianMethod))
    if ct_volume_cc is not None:
        items.append(_measurement(codes.SCT.Volume, ct_volume_cc, codes.UCUM.CubicCentimeter))
    if longest_diameter_mm is not None:
        items.append(_measurement(codes.SCT.Diameter, longest_diameter_mm, codes.UCUM.Millimeter, codes.SCT.Maximum))
    return items


def build_pet_report(
    pet_slices: Sequence[Dataset],
    stats: Sequence[RoiStats],
    *,
    time_point: str,
    time_point_order: int,
    categories: Mapping[str, str] | None = None,
    ct_volumes_cc: Mapping[str, float] | None = None,
    longest_diameters_mm: Mapping[str, float] | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 900,
    manufacturer: str = "OncoPACS",
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 report of ``stats`` measured on ``pet_slices`` (the evidence) at one time point.

    ``categories`` maps a criterion ("PERCIST 1.0", "EORTC 1999", "RECIST") to its category code
    (e.g. "PMR"). UIDs default to values derived from the evidence and the time point; content and
    creation date/time are the PET series' (deterministic output).
    """
    if not pet_slices:
        raise ValueError("an SR needs the PET slices it was measured on")
    seed = [str(ds.SOPInstanceUID) for ds in pet_slices] + [time_point, str(time_point_order)]
    context = hd.sr.TimePointContext(time_point=time_point, time_point_order=time_point_order)
    groups = []
    for roi in stats:
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(entropy_srcs=[*seed, "roi", roi.name]),
                                                         identifier=roi.name),
            time_point_context=context,
            finding_type=codes.SCT.Lesion,
            measurements=build_roi_measurements(roi, ct_volume_cc=(ct_volumes_cc or {}).get(roi.name),
                                                longest_diameter_mm=(longest_diameters_mm or {}).get(roi.name)),
        ))
    if categories:
        evaluations = [hd.sr.QualitativeEvaluation(RESPONSE_CONCEPTS[criterion],
                                                   Code(category, SCHEME, CATEGORY_MEANINGS[category]))
                       for criterion, category in categories.items()]
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(entropy_srcs=[*seed, "response"]),
                                                         identifier="Response"),
            time_point_context=context,
            qualitative_evaluations=evaluations,
        ))
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["oncopacs", "pet-quantification"]), name="OncoPACS PET quantification"),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=PROCEDURE,
        imaging_measurements=groups,
    )
    first = pet_slices[0]
    content_date = str(first.get("SeriesDate") or first.get("StudyDate") or "")
    content_time = str(first.get("SeriesTime") or first.get("StudyTime") or "")
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(pet_slices),
        content=report,
        series_instance_uid=series_instance_uid or generate_uid(entropy_srcs=[*seed, "sr-series"]),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(entropy_srcs=[*seed, "sr"]),
        instance_number=1,
        manufacturer=manufacturer,
        is_complete=True,
        series_description="PET measurements",
    )
    # dated by the PET series, not the clock, so the same inputs give byte-identical SRs (idempotent ingest)
    # highdicom's attributes are inferred as DA/TM; pydicom takes the DICOM string as well
    sr.InstanceCreationDate = sr.ContentDate = content_date  # type: ignore[assignment]
    sr.InstanceCreationTime = sr.ContentTime = content_time  # type: ignore[assignment]
    for equipment in sr.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in equipment:
            equipment.ContributionDateTime = content_date + content_time
    return sr


def _meaning(item: Dataset, keyword: str) -> str:
    sequence = item.get(keyword)
    return str(sequence[0].CodeMeaning) if sequence else ""


def read_pet_report(ds: Dataset) -> dict[str, dict[str, object]]:
    """{tracking identifier: {"<concept> (<derivation>)" or "<concept>": value or category code}} of an SR."""
    groups: dict[str, dict[str, object]] = {}

    def walk(items: Iterable[Dataset], group: dict[str, object] | None) -> None:
        for item in items:
            name = _meaning(item, "ConceptNameCodeSequence")
            if item.ValueType == "CONTAINER" and name == "Measurement Group":
                children = item.get("ContentSequence", [])
                identifier = next((str(c.TextValue) for c in children if c.ValueType == "TEXT"
                                   and _meaning(c, "ConceptNameCodeSequence") == "Tracking Identifier"), "")
                walk(children, groups.setdefault(identifier, {}))
            elif item.ValueType == "NUM" and group is not None:
                derivation = next((_meaning(c, "ConceptCodeSequence") for c in item.get("ContentSequence", [])
                                   if _meaning(c, "ConceptNameCodeSequence") == "Derivation"), "")
                key = f"{name} ({derivation})" if derivation else name
                group[key] = float(item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == "CODE" and group is not None:
                group[name] = str(item.ConceptCodeSequence[0].CodeValue)
            elif "ContentSequence" in item:
                walk(item.ContentSequence, group)

    walk(ds.get("ContentSequence", []), None)
    return groups
