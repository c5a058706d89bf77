"""The viewer finds a scene's inputs again only when the study's instances change (one query per slice)."""

from __future__ import annotations

import copy

from pydicom.uid import generate_uid

from oncopacs.archive.ingest import Archive
from oncopacs.phantom import build_demo_patient
from oncopacs.viewer.scene import Viewer, read_study_stamp


def test_inputs_are_reused_until_the_study_changes(archive: Archive):
    demo = build_demo_patient("ONCO-STAMP-001", "Phantom^Stamp")
    for dataset in demo.all_datasets():
        assert archive.ingest_dataset(dataset, source="test").acknowledged
    study = str(demo.rt_dose.StudyInstanceUID)
    viewer = Viewer(archive)
    first = viewer.scene_inputs(study)
    assert viewer.scene_inputs(study) is first  # nothing changed: no new look-up
    stamp = read_study_stamp(archive, study)
    dose = copy.deepcopy(demo.rt_dose)
    dose.SOPInstanceUID = generate_uid(entropy_srcs=["stamp", "second dose"])
    dose.file_meta.MediaStorageSOPInstanceUID = dose.SOPInstanceUID
    dose.SeriesInstanceUID = generate_uid(entropy_srcs=["stamp", "second series"])
    assert archive.ingest_dataset(dose, source="test").acknowledged
    assert read_study_stamp(archive, study) != stamp
    again = viewer.scene_inputs(study)
    assert again is not first and again.key == first.key  # looked up again; the same default dose and files
    other = viewer.scene_inputs(study, str(dose.SOPInstanceUID))
    assert other.dose_uid == str(dose.SOPInstanceUID) and other.key != first.key
    assert viewer.scene(study).inputs.key == first.key


def test_a_contoured_ct_without_a_plan_shows_its_structure_set(archive: Archive):
    """An auto-contoured CT (body-contour's RTSTRUCT, no plan, no dose) is drawn with its contours."""
    from oncopacs.orchestration.body_contour import BodyContour
    from oncopacs.orchestration.plugins import run_plugin
    from oncopacs.viewer.slices import RenderOptions

    demo = build_demo_patient("ONCO-CONTOUR-001", "Phantom^Contour")
    for dataset in demo.planning_ct:
        assert archive.ingest_dataset(dataset, source="test").acknowledged
    study, series = str(demo.planning_ct[0].StudyInstanceUID), str(demo.planning_ct[0].SeriesInstanceUID)
    viewer = Viewer(archive)
    assert viewer.scene_inputs(study).structure_set_uid is None  # a bare CT: nothing to draw yet
    run = run_plugin(archive, BodyContour(), series)
    rtstruct = next(uid for uid in run.stored if archive.read_instance(uid).Modality == "RTSTRUCT")
    inputs = viewer.scene_inputs(study)
    assert (inputs.structure_set_uid, inputs.dose_uid, inputs.ct_series_uid) == (rtstruct, None, series)
    scene = viewer.scene(study).scene
    assert {roi.name for roi in scene.rois} >= {"External", "Bones"}  # the demo CT has no lungs
    middle = len(demo.planning_ct) // 2
    drawn = viewer.slices.render(scene, "axial", middle, RenderOptions())
    plain = viewer.slices.render(scene, "axial", middle, RenderOptions(rois=()))
    assert drawn.png != plain.png  # the outlines are on the slice
