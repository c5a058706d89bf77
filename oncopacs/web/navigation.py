"""Where a person can go from a patient and from each of the patient's studies: the one place that knows which page
applies to what.

- Plan review (``/dashboards/plan/<StudyInstanceUID>``): the study holds a planning set, i.e. a structure set
  together with a plan or a dose (an FDG study with a bare RTSTRUCT has none).
- PET-CT (``/dashboards/pet/<StudyInstanceUID>``): the study holds a PT series.
- 4D / registration review (``/dashboards/review/<StudyInstanceUID>``): the study holds a registration, or at least
  two CT series named as respiratory phases (the index alone decides: no file is opened).
- Treatment response (``/dashboards/response/<PatientID>``) and the tumour board (``/dashboards/board/``): every
  patient.
- The images in OHIF (``/viewer?StudyInstanceUIDs=<StudyInstanceUID>``): every study; two studies together (current
  vs prior) from the response page.

The study browser and the dashboards' shell both read their links here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from oncopacs.archive.ingest import Archive
from oncopacs.index.oncology import OncologySummary, summarize_study
from oncopacs.index.query import QueryLevel, find, find_patient_study

MAX_STUDIES = 50  # studies of one patient listed in the navigation
_FOUR_D_MARKS = ("4D", "PHASE", "RESP", "%")


class Page(enum.StrEnum):
    """The dashboards a link can lead to."""

    PLAN = "plan"
    PET = "pet"
    REVIEW = "review"
    RESPONSE = "response"
    BOARD = "board"
    VIEWER = "viewer"


PAGE_LABELS: dict[Page, str] = {
    Page.PLAN: "Plan review",
    Page.PET: "PET-CT",
    Page.REVIEW: "4D / registration review",
    Page.RESPONSE: "Treatment response",
    Page.BOARD: "Tumour board",
    Page.VIEWER: "Images in OHIF",
}
STUDY_BROWSER_HREF = "/"
BOARD_HREF = "/dashboards/board/"


@dataclass(frozen=True, slots=True)
class PageLink:
    """A link to one dashboard."""

    page: Page
    href: str

    @property
    def label(self) -> str:
        return PAGE_LABELS[self.page]


@dataclass(frozen=True, slots=True)
class StudyEntry:
    """One study of the patient and the pages that apply to it (DICOM formats: date YYYYMMDD)."""

    study_uid: str
    study_date: str
    study_description: str
    modalities: tuple[str, ...]
    pages: tuple[PageLink, ...]

    @property
    def viewer(self) -> PageLink:
        """The study's images in OHIF."""
        return viewer_link(self.study_uid)


@dataclass(frozen=True, slots=True)
class PatientContext:
    """A patient as the context bar shows it (DICOM formats: PN, DA, CS) and the patient's studies, oldest first."""

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    studies: tuple[StudyEntry, ...]
    pages: tuple[PageLink, ...]


def has_planning_set(summary: OncologySummary) -> bool:
    """A structure set with a plan or a dose: what plan review shows."""
    return any(s.structure_set_uid and (s.plan_uids or s.dose_uids) for s in summary.treatment_planning_sets)


def has_pet(summary: OncologySummary) -> bool:
    return any(s.modality == "PT" for s in summary.image_series)


def four_d_series(summary: OncologySummary) -> tuple[str, ...]:
    """CT series named as phases of a 4D CT (``4D CT 50%``, ``RESP``, ``PHASE``): the builders' and scanners' names."""
    return tuple(s.series_instance_uid for s in summary.image_series
                 if s.modality == "CT" and any(m in s.series_description.upper() for m in _FOUR_D_MARKS))


def has_review(summary: OncologySummary) -> bool:
    return bool(summary.registrations) or len(four_d_series(summary)) >= 2


def study_pages(summary: OncologySummary) -> tuple[PageLink, ...]:
    """The dashboards that apply to the study, in the order a person meets them."""
    uid = quote(summary.study_instance_uid, safe="")
    checks = ((Page.PLAN, has_planning_set), (Page.PET, has_pet), (Page.REVIEW, has_review))
    return tuple(PageLink(page, f"/dashboards/{page.value}/{uid}") for page, applies in checks if applies(summary))


def viewer_link(*study_uids: str) -> PageLink:
    """The studies' images in OHIF (``/viewer`` picks the hanging protocol: planning, PET-CT, current vs prior)."""
    return PageLink(Page.VIEWER, "/viewer?" + urlencode({"StudyInstanceUIDs": ",".join(study_uids)}, safe=","))


def patient_pages(patient_id: str) -> tuple[PageLink, ...]:
    """The dashboards about the patient as a whole: the response timeline and the tumour board."""
    return (PageLink(Page.RESPONSE, f"/dashboards/response/{quote(patient_id, safe='')}"),
            PageLink(Page.BOARD, BOARD_HREF))


def read_patient_context(archive: Archive, *, study_uid: str = "", patient_id: str = "") -> PatientContext | None:
    """The patient of ``study_uid`` (or with exactly ``patient_id``) and their studies; None: the archive has none."""
    with archive.index.reading() as session:
        if study_uid:
            found = find_patient_study(session, study_uid)
            if found is None:
                return None
            patient_id = found.patient_id
        if not patient_id:
            return None
        matches = [m.values for m in find(session, QueryLevel.STUDY, {"PatientID": patient_id},
                                          return_keys=("ModalitiesInStudy",))
                   if m.values.get("PatientID") == patient_id]  # exactly: an ID may hold * or ?
        if not matches:
            return None
        matches.sort(key=lambda v: (str(v.get("StudyDate") or ""), str(v.get("StudyTime") or "")))
        chosen = matches[-MAX_STUDIES:]  # the latest; the page's own study always among them
        if study_uid and all(v["StudyInstanceUID"] != study_uid for v in chosen):
            own = next(v for v in matches if v["StudyInstanceUID"] == study_uid)
            chosen = [own, *chosen[1:]]
        studies = tuple(StudyEntry(v["StudyInstanceUID"], _text(v.get("StudyDate")), _text(v.get("StudyDescription")),
                                   tuple(v.get("ModalitiesInStudy") or ()),
                                   study_pages(summarize_study(session, v["StudyInstanceUID"])))
                        for v in chosen)
    head = matches[-1]
    return PatientContext(patient_id, _text(head.get("PatientName")), _text(head.get("PatientBirthDate")),
                          _text(head.get("PatientSex")), studies, patient_pages(patient_id))


def _text(value: object) -> str:
    return "" if value is None else str(value)
