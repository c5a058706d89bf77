"""C-FIND response identifiers are encoded exactly as pydicom would encode the same values."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pynetdicom.dsutils import encode

from oncopacs.dimse.identifiers import ResponseBuilder, read_query_keys
from oncopacs.index.query import QueryLevel


def request() -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.PatientName = "Phan*"
    query.StudyDate = "20230101-"
    query.ModalitiesInStudy = ""
    query.SOPInstanceUID = ""
    query.Rows = None
    query.NumberOfStudyRelatedInstances = ""
    query.InstitutionName = ""  # not held by the index: returned empty
    query.ReferencedImageSequence = []
    return query


VALUES = {
    "PatientName": "Phantom^Proton", "StudyDate": "20230105", "ModalitiesInStudy": ["CT", "RTDOSE"],
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.12345", "Rows": 512, "NumberOfStudyRelatedInstances": 33,
    "InstitutionName": "ignored",
}


def expected(implicit: bool, little: bool) -> bytes:
    response = Dataset()
    response.SpecificCharacterSet = "ISO_IR 192"
    response.QueryRetrieveLevel = "IMAGE"
    response.RetrieveAETitle = "ONCOPACS"
    response.PatientName = "Phantom^Proton"
    response.StudyDate = "20230105"
    response.ModalitiesInStudy = ["CT", "RTDOSE"]
    response.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.12345"
    response.Rows = 512
    response.NumberOfStudyRelatedInstances = 33
    response.InstitutionName = None
    response.ReferencedImageSequence = []
    return encode(response, implicit, little)


@pytest.mark.parametrize(("implicit", "little"), [(False, True), (True, True), (False, False)])
def test_encoding_matches_pydicom(implicit: bool, little: bool):
    builder = ResponseBuilder(request(), QueryLevel.IMAGE, "ONCOPACS", implicit_vr=implicit, little_endian=little)
    assert builder.encode(VALUES) == expected(implicit, little)


def test_query_keys_read_every_value_form():
    keys = read_query_keys(request())
    assert keys["PatientName"] == "Phan*" and keys["StudyDate"] == "20230101-"
    assert keys["SOPInstanceUID"] == "" and "ReferencedImageSequence" not in keys
