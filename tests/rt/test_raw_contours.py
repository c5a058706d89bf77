"""The fast structure-set path: DS parsing in one numpy cast and the raw ROIContourSequence walk agree with pydicom."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

import rt.structures as structures
from oncopacs.phantom import build_demo_patient
from rt.decimal_strings import parse_decimal_strings
from rt.raw_contours import read_raw_roi_contours
from tests.conftest import shared_data

IMPLICIT_LE, EXPLICIT_LE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"


def test_decimal_strings_give_the_very_floats_python_gives():
    rng = np.random.default_rng(7)
    tokens = ["0", "-0", ".5", "-.25", "+3.", "7.", "+0.000001", "123456789012345", "-99999.9999999999"]
    tokens += [f"{v:.{d}f}" for v, d in zip(rng.uniform(-600, 600, 3000), rng.integers(0, 9, 3000), strict=True)]
    tokens += [str(v) for v in rng.integers(-10**6, 10**6, 500)]
    values = parse_decimal_strings("\\".join(tokens).encode())
    expected = np.array([float(t) for t in tokens])
    assert values is not None
    assert np.array_equal(values.view(np.int64), expected.view(np.int64))  # bit for bit, signed zero included


@pytest.mark.parametrize("text", [b"1e5", b"1.5E-3", b" 1", b"2.5 ", b"1234567890123456.7", b"-0"])
def test_decimal_strings_in_exponent_form_or_padded_are_read_as_float_reads_them(text):
    assert np.array_equal(parse_decimal_strings(text).view(np.int64), np.array([float(text)]).view(np.int64))


@pytest.mark.parametrize("text", [b"", b"1\\\\2", b"1.2.3", b"1-2", b".", b"-", b"abc", b"1\\", b"nan",
                                  b"1\\inf", b"1_000", b"0x10"])
def test_decimal_strings_that_are_not_numbers_are_left_to_the_general_parser(text):
    assert parse_decimal_strings(text) is None


def _read_both_ways(ds_bytes: bytes, monkeypatch) -> tuple:
    fast = structures.read_structure_set(pydicom.dcmread(io.BytesIO(ds_bytes)))
    with monkeypatch.context() as patch:
        patch.setattr(structures, "read_raw_roi_contours", lambda ds: None)
        slow = structures.read_structure_set(pydicom.dcmread(io.BytesIO(ds_bytes)))
    return fast, slow


def _assert_same(fast, slow) -> None:
    assert [(r.number, r.name, r.colour, r.interpreted_type) for r in fast.rois] == \
        [(r.number, r.name, r.colour, r.interpreted_type) for r in slow.rois]
    for a, b in zip(fast.rois, slow.rois, strict=True):
        assert len(a.contours) == len(b.contours), a.name
        for ca, cb in zip(a.contours, b.contours, strict=True):
            assert ca.geometric_type == cb.geometric_type
            assert np.array_equal(ca.points_mm, cb.points_mm)


def _encode(ds, transfer_syntax: str) -> bytes:
    ds = ds.copy()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("transfer_syntax", [IMPLICIT_LE, EXPLICIT_LE])
def test_raw_walk_reads_what_pydicom_reads(transfer_syntax, monkeypatch):
    rtstruct = build_demo_patient().rtstruct
    # A nested undefined-length sequence inside the defined-length ROIContourSequence is walked to its delimiter.
    for item in rtstruct.ROIContourSequence:
        item["ContourSequence"].is_undefined_length = True
        for contour in item.ContourSequence:
            contour.is_undefined_length_sequence_item = True
    encoded = _encode(rtstruct, transfer_syntax)
    assert read_raw_roi_contours(pydicom.dcmread(io.BytesIO(encoded))) is not None  # the fast path is taken
    _assert_same(*_read_both_ways(encoded, monkeypatch))


@pytest.mark.parametrize(
    "folder, pattern", [("eclipse-prostate-phantom", "RS*.dcm"), ("dcpt-proton-phantom", "*/RS*.dcm")]
)
def test_raw_walk_reads_planning_system_files_as_pydicom_does(folder, pattern, monkeypatch):
    paths = sorted(shared_data(folder).glob(pattern))
    assert paths, f"no {pattern} in {folder}"
    for path in paths:
        assert read_raw_roi_contours(pydicom.dcmread(path)) is not None, path.name
        _assert_same(*_read_both_ways(path.read_bytes(), monkeypatch))


def test_a_contour_in_another_number_form_takes_the_pydicom_path(monkeypatch):
    rtstruct = build_demo_patient().rtstruct
    rtstruct.ROIContourSequence[0].ContourSequence[0].ContourData[0] = 1.5e-7  # written in exponent form
    fast, slow = _read_both_ways(_encode(rtstruct, EXPLICIT_LE), monkeypatch)
    _assert_same(fast, slow)
    assert fast.rois[0].contours[0].points_mm[0, 0] == pytest.approx(1.5e-7)


def test_a_truncated_sequence_is_not_walked():
    rtstruct = pydicom.dcmread(io.BytesIO(_encode(build_demo_patient().rtstruct, EXPLICIT_LE)))
    raw = rtstruct.get_item(0x30060039)
    rtstruct[0x30060039] = raw._replace(value=raw.value[: len(raw.value) // 2], length=len(raw.value) // 2)
    assert read_raw_roi_contours(rtstruct) is None
