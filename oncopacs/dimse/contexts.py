"""The presentation contexts OncoPACS accepts: every storage SOP class in every transfer syntax."""

from __future__ import annotations

from typing import cast

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # names pynetdicom makes at import
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

#: Uncompressed syntaxes first: what we propose when sending if the stored one is refused.
UNCOMPRESSED_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian
]

#: Everything pynetdicom knows (implicit/explicit LE, deflated, JPEG family, JPEG-LS, JPEG 2000, RLE, HTJ2K, MPEG...).
ACCEPTED_SYNTAXES = list(dict.fromkeys([*UNCOMPRESSED_SYNTAXES, *ALL_TRANSFER_SYNTAXES]))

STORAGE_SOP_CLASSES = [cast(UID, cx.abstract_syntax) for cx in AllStoragePresentationContexts]  # all are set

FIND_SOP_CLASSES = {
    PatientRootQueryRetrieveInformationModelFind: "PATIENT_ROOT",
    StudyRootQueryRetrieveInformationModelFind: "STUDY_ROOT",
    ModalityWorklistInformationFind: "WORKLIST",  # answered by oncopacs.dimse.worklist
}
GET_SOP_CLASSES = [PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet]
MOVE_SOP_CLASSES = [PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove]
QUERY_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian]

VERIFICATION = Verification
STORAGE_COMMITMENT = cast(UID, StorageCommitmentPushModel)  # N-ACTION / N-EVENT-REPORT: oncopacs.dimse.commitment
MPPS = ModalityPerformedProcedureStep  # N-CREATE / N-SET, answered by oncopacs.dimse.mpps
