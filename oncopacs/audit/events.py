"""What an audit record says: who did what to which patient and study, when, from where, and how it ended."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AuditAction(str, enum.Enum):
    """The kinds of event recorded, each mapped to its DICOM audit EventID (PS3.15 A.5.3)."""

    QUERY = "query"  # QIDO-RS, C-FIND, API searches            -> 110112 Query
    RETRIEVE = "retrieve"  # WADO-RS, C-GET, C-MOVE, API reads  -> 110104 DICOM Instances Transferred (R)
    STORE = "store"  # STOW-RS, C-STORE, import                 -> 110104 DICOM Instances Transferred (C)
    READ = "read"  # API reads of patient/study records          -> 110110 Patient Record (R)
    EXPORT = "export"  # report exports, downloads              -> 110106 Export
    REPORT_VIEW = "report_view"  # a report opened               -> 110110 Patient Record (R)
    LOGIN = "login"  # a successful sign-in                      -> 110114 User Authentication
    LOGIN_FAILED = "login_failed"  # a refused sign-in           -> 110114 User Authentication (failure)
    LOGOUT = "logout"  #                                         -> 110114 User Authentication
    USER_CHANGE = "user_change"  # users, roles, tokens          -> 110113 Security Alert
    CONFIG_CHANGE = "config_change"  # peers, settings           -> 110113 Security Alert
    ASSOCIATION_REFUSED = "association_refused"  # DIMSE allow-list -> 110113 Security Alert
    PATIENT_RECORD = "patient_record"  # an HL7 ADT message received  -> 110110 Patient Record (U)
    ORDER_RECORD = "order_record"  # an HL7 order or appointment     -> 110109 Order Record (U)
    AUDIT_LOG_USED = "audit_log_used"  # the trail read or verified  -> 110101 Audit Log Used (R)


class Outcome(int, enum.Enum):
    """EventOutcomeIndicator values of PS3.15 A.5.1."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


class ActorKind(str, enum.Enum):
    USER = "user"  # a person or a token/Basic client, by user name
    AE = "ae"  # a DICOM application entity, by calling AE title
    SYSTEM = "system"  # OncoPACS itself (jobs, start-up)
    APPLICATION = "application"  # an HL7 sending application, as MSH-3 or MSH-3^MSH-4


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One event to record; the trail adds the time and the chain hash."""

    action: AuditAction
    outcome: Outcome
    actor: str
    actor_kind: ActorKind
    source: str  # IP address (or host) the request or association came from
    patient_ids: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    detail: str = ""  # the route or DIMSE service and what was asked, e.g. "GET /dicom-web/studies?PatientID=…"
