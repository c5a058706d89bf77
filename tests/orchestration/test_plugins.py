"""Analysis plug-ins: found by entry point, run on a series of the archive, their products stored with provenance."""

from __future__ import annotations

from dataclasses import replace

import pytest

from oncopacs.errors import NotFoundError
from oncopacs.index.oncology import summarize_study
from oncopacs.orchestration import plugins
from oncopacs.orchestration.body_contour import BodyContour
from oncopacs.orchestration.plugins import discover_plugins, run_plugin
from oncopacs.phantom.ct4d import CT4D_FAMILY, build_ct4d_phantom
from rt.structures import read_structure_set


@pytest.fixture(scope="module")
def thorax():
    spec = replace(CT4D_FAMILY["issue_case"], phases=1, gtv_phase=0, supersampling=1)
    return build_ct4d_phantom(spec)


def test_the_shipped_body_contour_plugin_is_found_by_its_entry_point():
    entry = discover_plugins()["body-contour"]
    assert entry.plugin is not None and entry.problem == ""
    assert entry.to_dict()["version"] == "1.0.0" and entry.to_dict()["produces"] == ["RTSTRUCT", "SEG"]


def test_a_plugin_that_cannot_load_is_reported_not_fatal(monkeypatch):
    class Broken:
        name, value = "broken-model", "nowhere:Model"

        def load(self):
            raise ImportError("No module named 'nowhere'")

    class Shapeless:
        name, value = "shapeless", "somewhere:thing"

        def load(self):
            return object()

    monkeypatch.setattr(plugins, "entry_points", lambda group: [Broken(), Shapeless()])
    found = discover_plugins()
    assert found["broken-model"].plugin is None and "No module named 'nowhere'" in found["broken-model"].problem
    assert found["shapeless"].plugin is None and "lacks name" in found["shapeless"].problem


@pytest.mark.slow  # the contouring of a thorax CT: a few seconds
def test_body_contour_stores_an_rtstruct_and_a_seg_linked_to_the_ct_with_provenance(archive, thorax):
    ct = list(thorax.phases[0])
    for ds in ct:
        assert archive.ingest_dataset(ds, source="test").acknowledged
    series = str(ct[0].SeriesInstanceUID)
    run = run_plugin(archive, BodyContour(), series)
    assert len(run.stored) == 2 and run.refused == () and (run.plugin, run.version) == ("body-contour", "1.0.0")
    products = {str(archive.read_instance(uid).Modality): archive.read_instance(uid) for uid in run.stored}
    rtstruct, seg = products["RTSTRUCT"], products["SEG"]
    equipment = rtstruct.ContributingEquipmentSequence[0]
    assert (equipment.ManufacturerModelName, equipment.SoftwareVersions) == ("body-contour", "1.0.0")
    assert all(r.ROIGenerationAlgorithm == "AUTOMATIC" for r in rtstruct.RTROIObservationsSequence
               if "ROIGenerationAlgorithm" in r) or all(
        r.ROIGenerationAlgorithm == "AUTOMATIC" for r in rtstruct.StructureSetROISequence)
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("body-contour", "1.0.0")
    names = {r.name for r in read_structure_set(rtstruct).rois}
    assert {"External", "Lungs"} <= names
    with archive.index.reading() as session:  # the index links the structure set to the CT it was drawn on
        summary = summarize_study(session, str(ct[0].StudyInstanceUID))
    drawn_on = [s for s in summary.structure_sets if s.sop_instance_uid == str(rtstruct.SOPInstanceUID)]
    assert drawn_on and series in drawn_on[0].image_series_uids
    again = run_plugin(archive, BodyContour(), series)  # the same input gives the same objects: nothing twice
    assert sorted(again.stored) == sorted(run.stored) and again.refused == ()
    assert len(archive.read_series(str(rtstruct.SeriesInstanceUID))) == 1


def test_a_series_the_plugin_does_not_accept_is_refused_in_a_sentence(archive, thorax):
    assert archive.ingest_dataset(thorax.rtstruct, source="test").acknowledged
    with pytest.raises(ValueError, match="body-contour accepts CT series, not RTSTRUCT"):
        run_plugin(archive, BodyContour(), str(thorax.rtstruct.SeriesInstanceUID))
    with pytest.raises(NotFoundError, match="is not in the archive"):
        run_plugin(archive, BodyContour(), "1.2.3.4.5")


@pytest.mark.slow  # two contourings of a thorax CT
def test_a_series_that_grew_gets_new_objects(archive, thorax):
    ct = sorted(thorax.phases[0], key=lambda ds: float(ds.ImagePositionPatient[2]))
    for ds in ct[:-1]:
        assert archive.ingest_dataset(ds, source="test").acknowledged
    series = str(ct[0].SeriesInstanceUID)
    first = run_plugin(archive, BodyContour(), series)
    assert archive.ingest_dataset(ct[-1], source="test").acknowledged  # a late slice
    second = run_plugin(archive, BodyContour(), series)
    assert len(second.stored) == 2 and set(second.stored).isdisjoint(first.stored)
