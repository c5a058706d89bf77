"""The C-FIND result limit (``find_limit``, ONCOPACS_FIND_LIMIT), with pynetdicom and dcmtk's findscu as peers.

Eight one-instance studies are stored; a limit below that answers the first matches then A700 (Refused: Out of
Resources) with an Error Comment, a limit at or above it answers everything then Success, 0 means no limit. Each
runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)
from sqlalchemy import event

from oncopacs.archive.ingest import Archive
from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.audit.trail import AuditFilter, AuditTrail
from oncopacs.auth.roles import Role
from oncopacs.dimse.server import start_dimse
from oncopacs.errors import ConfigError
from oncopacs.index.query import QueryLevel, find_at_most
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app
from tests.dimse.test_dcmtk import key_args, run_dcmtk
from tests.factories import small_ct_series

STUDIES = 8
PENDING, SUCCESS, OUT_OF_RESOURCES = 0xFF00, 0x0000, 0xA700
AE_TITLE = "ONCOPACS"


@pytest.fixture
def stored(archive: Archive) -> list[Dataset]:
    """Eight studies of one CT slice each, one patient each."""
    datasets = small_ct_series(STUDIES, studies=STUDIES, prefix="LIM")
    for dataset in datasets:
        assert archive.ingest_dataset(dataset, source="test").acknowledged
    return datasets


@pytest.fixture
def serve(settings: Settings, archive: Archive, stored) -> Iterator[Callable[[int], tuple[str, int]]]:
    """``serve(find_limit)``: a DIMSE listener over the stored archive, on a free loopback port."""
    with ExitStack() as stack:

        def start(find_limit: int) -> tuple[str, int]:
            server = start_dimse(settings.with_overrides(find_limit=find_limit), archive)
            stack.callback(server.shutdown)
            return "127.0.0.1", server.server_address[1]

        yield start


def pynetdicom_find(address: tuple[str, int], level: str, model=StudyRootQueryRetrieveInformationModelFind,
                    **keys: str) -> tuple[list[Dataset], Dataset]:
    """The Pending identifiers and the final status dataset of one C-FIND."""
    ae = AE(ae_title="LIMITSCU")
    ae.add_requested_context(model)
    assoc = ae.associate(*address, ae_title=AE_TITLE)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = level
    query.PatientID = ""
    query.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    identifiers, final = [], None
    for status, identifier in assoc.send_c_find(query, model):
        assert status is not None, "no response (association aborted or timed out)"
        if status.Status == PENDING:
            identifiers.append(identifier)
        else:
            final = status
    assoc.release()
    assert final is not None
    return identifiers, final


def study_uids(identifiers: list[Dataset]) -> list[str]:
    return [str(identifier.StudyInstanceUID) for identifier in identifiers]


def query_records(archive: Archive) -> list:
    return list(AuditTrail(archive.index).iter_entries(AuditFilter(action=AuditAction.QUERY)))


# -- pynetdicom -----------------------------------------------------------------------------


def test_broad_study_query_over_the_limit_gets_the_first_matches_then_a700(serve, stored, archive, caplog) -> None:
    caplog.set_level(logging.INFO, logger="oncopacs.dimse.handlers")
    identifiers, final = pynetdicom_find(serve(5), "STUDY")
    assert final.Status == OUT_OF_RESOURCES
    assert final.ErrorComment == "more than 5 matches, 5 sent; narrow the query"
    everything = [str(d.StudyInstanceUID) for d in stored]
    assert study_uids(identifiers) == everything[:5]  # the first five, in the order they were stored
    (record,) = query_records(archive)
    assert record.outcome == Outcome.MINOR_FAILURE
    assert "5 match(es) sent, truncated at the find limit (5)" in record.detail
    assert sorted(record.study_uids) == sorted(everything[:5])  # what was sent, not what was held back
    log = "\n".join(r.getMessage() for r in caplog.records if r.name == "oncopacs.dimse.handlers")
    assert "C-FIND STUDY from LIMITSCU: 5 matches, truncated at the find limit (5)" in log
    assert "Bench^" not in log and "LIM-" not in log  # no patient data in the log


def test_broad_image_query_with_a_wildcard_name_is_limited_too(serve) -> None:
    identifiers, final = pynetdicom_find(serve(5), "IMAGE", PatientRootQueryRetrieveInformationModelFind,
                                         PatientName="*", SOPInstanceUID="")
    assert final.Status == OUT_OF_RESOURCES
    assert len(identifiers) == 5 and len({str(d.SOPInstanceUID) for d in identifiers}) == 5


@pytest.mark.parametrize("find_limit", [STUDIES, STUDIES + 1, 10_000])
def test_at_or_under_the_limit_every_match_and_success(serve, stored, archive, find_limit: int) -> None:
    identifiers, final = pynetdicom_find(serve(find_limit), "STUDY")
    assert final.Status == SUCCESS and "ErrorComment" not in final
    assert study_uids(identifiers) == [str(d.StudyInstanceUID) for d in stored]
    (record,) = query_records(archive)
    assert record.outcome == Outcome.SUCCESS and record.detail.endswith(f": {STUDIES} match(es)")


def test_a_narrow_query_under_a_small_limit_is_complete(serve, stored) -> None:
    identifiers, final = pynetdicom_find(serve(1), "STUDY", StudyInstanceUID=str(stored[6].StudyInstanceUID))
    assert final.Status == SUCCESS
    assert study_uids(identifiers) == [str(stored[6].StudyInstanceUID)]


def test_limit_zero_means_no_limit(serve, stored) -> None:
    identifiers, final = pynetdicom_find(serve(0), "STUDY")
    assert final.Status == SUCCESS
    assert len(identifiers) == STUDIES


def test_the_database_is_asked_for_one_row_past_the_limit(archive: Archive, stored) -> None:
    executed: list[tuple[str, list]] = []

    def remember(conn, cursor, statement, parameters, context, executemany) -> None:
        values = parameters.values() if isinstance(parameters, dict) else parameters
        executed.append((statement, list(values)))

    engine = archive.index.read_engine
    event.listen(engine, "before_cursor_execute", remember)
    try:
        with archive.index.reading() as session:
            found = find_at_most(session, QueryLevel.STUDY, {}, 3)
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    assert found.truncated and len(found.matches) == 3
    (values,) = [v for s, v in executed if re.search(r"\bLIMIT\b", s)]
    assert 4 in values  # LIMIT limit + 1: one row tells that more matched
    with archive.index.reading() as session:
        assert not find_at_most(session, QueryLevel.STUDY, {}, STUDIES).truncated
        assert len(find_at_most(session, QueryLevel.STUDY, {}, 0).matches) == STUDIES
        with pytest.raises(ValueError, match="negative"):
            find_at_most(session, QueryLevel.STUDY, {}, -1)


# -- dcmtk's findscu ------------------------------------------------------------------------


def findscu(address: tuple[str, int], work_dir: Path, *keys: str) -> tuple[list[Dataset], str]:
    """A Study Root C-FIND by findscu; the response identifiers (its ``-X`` files) and its debug output."""
    work_dir.mkdir(parents=True)
    result = run_dcmtk("findscu", "-d", "-S", "-aec", AE_TITLE, "-X", *key_args(keys), *map(str, address),
                       cwd=work_dir)
    return [pydicom.dcmread(p) for p in sorted(work_dir.glob("rsp*.dcm"))], result.stdout


@pytest.mark.dcmtk
def test_findscu_over_the_limit_gets_five_and_out_of_resources(serve, stored, tmp_path: Path) -> None:
    found, output = findscu(serve(5), tmp_path / "over", "QueryRetrieveLevel=STUDY", "StudyInstanceUID")
    assert study_uids(found) == [str(d.StudyInstanceUID) for d in stored[:5]]
    assert re.search(r"Refused: OutOfResources|0xa700", output, re.IGNORECASE), output[-3000:]
    assert re.search(r"\(0000,0902\) LO \[more than 5 matches, 5 sent; narrow the query ?\]", output), output[-3000:]


@pytest.mark.dcmtk
@pytest.mark.parametrize("find_limit", [0, STUDIES])
def test_findscu_at_the_limit_or_without_one_gets_all_and_success(serve, stored, tmp_path: Path,
                                                                  find_limit: int) -> None:
    found, output = findscu(serve(find_limit), tmp_path / "all", "QueryRetrieveLevel=STUDY", "StudyInstanceUID")
    assert study_uids(found) == [str(d.StudyInstanceUID) for d in stored]
    assert "Success" in output and not re.search(r"OutOfResources|0xa700", output, re.IGNORECASE), output[-3000:]


# -- QIDO-RS shares the limit -----------------------------------------------------------------


def test_qido_pages_are_capped_by_the_same_limit(settings: Settings) -> None:
    """find_limit below the QIDO page (1000) caps it: a Warning says more can be requested with offset."""
    with open_platform(settings.with_overrides(find_limit=3)) as platform:
        for dataset in small_ct_series(STUDIES, studies=STUDIES, prefix="QLIM"):
            assert platform.archive.ingest_dataset(dataset, source="test").acknowledged
        app = create_app(platform)
        users = app.extensions["oncopacs.users"]
        users.add_user("limit-physicist", Role.PHYSICIST, "correct horse battery")
        headers = {"Authorization": f"Bearer {users.create_token('limit-physicist')}"}
        web = app.test_client()
        first = web.get("/dicom-web/studies", headers=headers)
        assert first.status_code == 200 and len(first.json) == 3
        assert "Additional results can be requested" in first.headers["Warning"]
        rest = web.get("/dicom-web/studies?offset=3&limit=100", headers=headers)
        assert len(rest.json) == 3 and "Warning" in rest.headers  # the client's limit is above the cap
        app.config["QIDO_MAX_RESULTS"] = 2  # a page below the limit stays the page
        assert len(web.get("/dicom-web/studies", headers=headers).json) == 2


# -- the setting ------------------------------------------------------------------------------


def test_the_setting_is_read_from_the_environment_and_checked() -> None:
    assert Settings().find_limit == 10_000
    assert Settings.load(env={"ONCOPACS_FIND_LIMIT": "5"}).find_limit == 5
    assert Settings.load(env={"ONCOPACS_FIND_LIMIT": "0"}).find_limit == 0
    for bad in ("-1", "many", "2.5"):
        with pytest.raises(ConfigError, match=r"find_limit \(ONCOPACS_FIND_LIMIT\) has an invalid value"):
            Settings.load(env={"ONCOPACS_FIND_LIMIT": bad})
