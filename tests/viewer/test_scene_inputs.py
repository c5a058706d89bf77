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
