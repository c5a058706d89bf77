"""4D CT: phase recognition, projections, GTV propagation, ITV and motion on the synthetic 4D CT phantom."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import Dataset

from fusion.ct4d import (
    Ct4dError,
    analyse_4dct,
    build_derived_series,
    compute_centroid_mm,
    find_reference_phase,
    group_phases,
    load_phase_images,
    propagate_gtv,
    read_phase_label,
    select_gtv,
)
from fusion.volume import load_series
from oncopacs.phantom.ct4d import Ct4dSpec, build_ct4d_phantom
from rt.structures import StructureSet, read_structure_set


@pytest.fixture(scope="module")
def phantom():
    return build_ct4d_phantom(Ct4dSpec(gtv_phase=0))


@pytest.fixture(scope="module")
def analysis(phantom):
    return analyse_4dct(phantom.all_datasets())


def test_phase_label_precedence():
    ds = Dataset()
    ds.SeriesDescription = "Gated 4D CT T=60 %"
    assert read_phase_label(ds) == ("SeriesDescription", 60.0)
    ds.TemporalPositionIndex = 3
    assert read_phase_label(ds) == ("TemporalPositionIndex", 3.0)
    ds.NominalPercentageOfRespiratoryPhase = 20.0
    assert read_phase_label(ds) == ("NominalPercentageOfRespiratoryPhase", 20.0)
    assert read_phase_label(Dataset()) is None
    ds = Dataset()
    ds.SeriesDescription = "Average CT"
    assert read_phase_label(ds) is None


def test_phases_from_standard_attributes(phantom):
    phases = group_phases(phantom.all_datasets())
    assert [p.percent for p in phases] == [10.0 * i for i in range(10)]
    assert {p.source for p in phases} == {"NominalPercentageOfRespiratoryPhase"}
    assert all(len(p.datasets) == phantom.spec.shape[0] for p in phases)
    assert find_reference_phase(phases, phantom.rtstruct) == 0


def test_phases_from_temporal_position_index_and_from_descriptions():
    labelled = build_ct4d_phantom(Ct4dSpec(phases=4, shape=(6, 16, 16), supersampling=1))
    datasets = []
    for phase in labelled.phases:
        for ds in phase:
            del ds.NominalPercentageOfRespiratoryPhase
            datasets.append(ds)
    phases = group_phases(datasets)
    assert [p.percent for p in phases] == [0.0, 25.0, 50.0, 75.0]
    assert {p.source for p in phases} == {"TemporalPositionIndex"}
    described = build_ct4d_phantom(Ct4dSpec(phases=4, shape=(6, 16, 16), supersampling=1, label_with_attributes=False))
    phases = group_phases(described.all_datasets())
    assert [p.percent for p in phases] == [0.0, 25.0, 50.0, 75.0]
    assert {p.source for p in phases} == {"SeriesDescription"}
    with pytest.raises(Ct4dError, match="phase"):
        group_phases(list(described.phases[0]))


def test_motion_amplitude_and_itv_match_the_truth(phantom, analysis):
    truth = dict(zip(("LR", "AP", "SI"), phantom.spec.compute_amplitude_mm(), strict=True))
    assert analysis.motion.to_dict()["phases"] == 10
    for axis, value in analysis.motion.amplitude_mm.items():
        assert value == pytest.approx(truth[axis], abs=1.0), axis
    assert analysis.motion.itv_cc == pytest.approx(phantom.spec.compute_swept_volume_cc(), rel=0.05)
    centres = np.array([phantom.spec.compute_tumour_centre_mm(i) for i in range(10)])
    np.testing.assert_allclose(np.array(analysis.motion.centroids_mm), centres, atol=1.0)
    assert analysis.to_dict()["reference_phase_percent"] == 0.0


def test_projections_and_derived_series(phantom, analysis):
    mip, aip, minip = (sitk.GetArrayFromImage(i) for i in (analysis.projections.mip, analysis.projections.aip,
                                                          analysis.projections.minip))
    assert np.all(mip >= aip - 1e-3) and np.all(aip >= minip - 1e-3)
    # the tumour path: MIP shows tissue wherever the tumour passes, MinIP only where it always is
    assert (mip > -400).sum() > (minip > -400).sum()
    slices = build_derived_series(analysis.projections.mip, phantom.phases[0][0], "MIP", series_number=801)
    assert slices[0].ImageType[3] == "MIP" and slices[0].FrameOfReferenceUID == phantom.phases[0][0].FrameOfReferenceUID
    np.testing.assert_allclose(sitk.GetArrayFromImage(load_series(slices)), np.rint(mip))
    with pytest.raises(ValueError):
        build_derived_series(analysis.projections.mip, phantom.phases[0][0], "SUM", series_number=1)


def test_gtv_propagation_needs_a_registration(phantom):
    phases = group_phases(phantom.all_datasets())[:2]
    images = load_phase_images(phases)
    gtv = select_gtv(read_structure_set(phantom.rtstruct), None)
    with pytest.raises(Ct4dError, match="registration"):
        propagate_gtv(gtv, images, 0, None)
    # with the exact motion as the "registration", the centroid follows the truth exactly
    shift = np.subtract(phantom.spec.compute_tumour_centre_mm(0), phantom.spec.compute_tumour_centre_mm(1))
    occupancies = propagate_gtv(gtv, images, 0, lambda fixed, moving: sitk.TranslationTransform(3, tuple(shift)))
    np.testing.assert_allclose(compute_centroid_mm(occupancies[1]), phantom.spec.compute_tumour_centre_mm(1), atol=0.05)
    with pytest.raises(Ct4dError, match="GTV candidates"):
        select_gtv(StructureSet("1.2.3", "", "", ()), None)
