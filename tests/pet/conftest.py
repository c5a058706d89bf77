"""Fixtures of the PET tests: the longitudinal demo phantoms, built once per module."""

from __future__ import annotations

import pytest

from oncopacs.phantom.pet_followup import (
    LongitudinalPatient,
    build_longitudinal_patient,
)


@pytest.fixture(scope="module")
def responder() -> LongitudinalPatient:
    return build_longitudinal_patient("PET-RESP-T1", "Test^Responder", "responder")


@pytest.fixture(scope="module")
def progressor() -> LongitudinalPatient:
    return build_longitudinal_patient("PET-PROG-T1", "Test^Progressor", "progressor", sex="F", weight_kg=64.0,
                                      height_m=1.66)
