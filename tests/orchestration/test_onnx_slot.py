"""The ONNX model slot: the shipped body model reproduces its threshold, runs as a plug-in, and refuses misfits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import TensorProto, helper, numpy_helper

from oncopacs.errors import ConfigError, GeometryError
from oncopacs.orchestration.models.train_body_onnx import (
    MODEL_PATH,
    TARGET_THRESHOLD_HU,
    TrainingSettings,
    compute_dice,
    compute_phantom_slice_hu,
    export_onnx,
    train,
)
from oncopacs.orchestration.onnx_slot import BodyThresholdOnnx, OnnxSegmentationPlugin
from oncopacs.orchestration.plugins import discover_plugins, run_plugin
from oncopacs.phantom.anatomy import build_default_anatomy
from oncopacs.phantom.ct import build_ct_series
from oncopacs.phantom.geometry import centred_grid
from oncopacs.phantom.specs import PatientSpec, make_series_spec, make_study_spec
from oncopacs.uids import uid_for
from rt.structures import read_structure_set

BODY_METADATA = {"name": "test-model", "version": "0.1", "labels": "External", "interpreted_types": "EXTERNAL"}


@pytest.fixture(scope="module")
def body_model() -> BodyThresholdOnnx:
    return BodyThresholdOnnx()


def phantom_ct(body_radius_mm: float, *, slices: int = 6, size: int = 64, pixel_mm: float = 4.0):
    """A phantom CT series (water cylinder of ``body_radius_mm`` spanning every slice) and its body volume (cc)."""
    grid = centred_grid((slices, size, size), (pixel_mm, pixel_mm, 5.0))
    patient = PatientSpec(f"ONNX{int(body_radius_mm)}", "Onnx^Phantom")
    study = make_study_spec(patient, "onnx", study_id="1", description="ONNX slot")
    series = make_series_spec(study, "ct", series_number=1, description="CT", modality="CT",
                              frame_of_reference_uid=uid_for(patient.patient_id, "frame"))
    ct = build_ct_series(patient, study, series, grid, build_default_anatomy(grid, body_radius_mm=body_radius_mm))
    return ct, math.pi * body_radius_mm**2 * slices * 5.0 / 1000.0


def write_model(path: Path, nodes, input_shape, output_shape, metadata, *, output_type=TensorProto.FLOAT,
                initializers=()) -> Path:
    graph = helper.make_graph(nodes, "test", [helper.make_tensor_value_info("ct", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("out", output_type, output_shape)],
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def threshold_model(path: Path, input_shape, metadata=BODY_METADATA) -> Path:
    """HU > -300 as a probability (0 or 1), for any input shape."""
    return write_model(path, [
        helper.make_node("Greater", ["ct", "threshold"], ["above"]),
        helper.make_node("Cast", ["above"], ["out"], to=TensorProto.FLOAT)], input_shape, input_shape, metadata,
        initializers=[numpy_helper.from_array(np.array(TARGET_THRESHOLD_HU, np.float32), "threshold")])


@pytest.mark.parametrize("body_radius_mm", [45.0, 75.0, 95.0, 120.0, 140.0])
@pytest.mark.parametrize("seed", [3, 11])
def test_the_shipped_model_reproduces_the_threshold_on_a_phantom_family(body_model, body_radius_mm, seed):
    rng = np.random.default_rng(seed)
    hu = np.stack([compute_phantom_slice_hu(body_radius_mm, rng, z_mm=z, noise_hu=25.0) for z in (-35.0, 5.0, 40.0)])
    (mask,) = body_model.compute_masks(hu.astype(np.float32))
    truth = hu > TARGET_THRESHOLD_HU
    assert truth.sum() > 100 and compute_dice(mask, truth) >= 0.98


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
              elements=st.floats(-1024, 3000, width=32)))
def test_the_shipped_model_agrees_with_the_threshold_away_from_it(hu):
    hu = np.where(np.abs(hu - TARGET_THRESHOLD_HU) < 5.0, TARGET_THRESHOLD_HU - 50.0, hu).astype(np.float32)
    (mask,) = BodyThresholdOnnx().compute_masks(hu)
    np.testing.assert_array_equal(mask, hu > TARGET_THRESHOLD_HU)


def test_the_shipped_model_is_listed_with_its_metadata():
    entry = discover_plugins()["onnx-body"]
    assert entry.plugin is not None and entry.problem == ""
    assert entry.to_dict()["version"] == "1.0.0" and entry.to_dict()["produces"] == ["RTSTRUCT", "SEG"]
    meta = ort.InferenceSession(str(MODEL_PATH), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert '"validation_dice": 1.0' in meta.custom_metadata_map["training"]
    assert MODEL_PATH.stat().st_size < 8192


def test_retraining_reproduces_the_shipped_model(tmp_path):
    model = train()
    shipped = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(MODEL_PATH)).graph.initializer}
    np.testing.assert_allclose(shipped["weight"].ravel(), [model.weight_per_hu], rtol=1e-5)
    np.testing.assert_allclose(shipped["bias"], [model.bias], rtol=1e-5)
    assert abs(model.boundary_hu - TARGET_THRESHOLD_HU) < 2.0 and model.validation_dice >= 0.99
    export_onnx(model, TrainingSettings(), tmp_path / "again.onnx")
    hu = np.linspace(-1024, 1500, 4096, dtype=np.float32).reshape(1, 1, 64, 64)
    outputs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"hu": hu})[0]
               for p in (MODEL_PATH, tmp_path / "again.onnx")]
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)


@pytest.mark.parametrize("body_radius_mm", [70.0, 110.0])
def test_the_plugin_stores_an_rtstruct_and_a_seg_with_provenance_and_the_body_volume(archive, body_model,
                                                                                     body_radius_mm):
    ct, volume_cc = phantom_ct(body_radius_mm)
    for ds in ct:
        assert archive.ingest_dataset(ds, source="test").acknowledged
    series = str(ct[0].SeriesInstanceUID)
    run = run_plugin(archive, body_model, series)
    assert len(run.stored) == 2 and run.refused == () and (run.plugin, run.version) == ("onnx-body", "1.0.0")
    products = {str(archive.read_instance(uid).Modality): archive.read_instance(uid) for uid in run.stored}
    rtstruct, seg = products["RTSTRUCT"], products["SEG"]
    equipment = rtstruct.ContributingEquipmentSequence[0]
    assert (equipment.ManufacturerModelName, equipment.SoftwareVersions) == ("onnx-body", "1.0.0")
    assert all("ONNX model" in r.ROIGenerationDescription for r in rtstruct.StructureSetROISequence)
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("onnx-body", "1.0.0")
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert body_model.card.sha256 in algorithm.AlgorithmParameters
    body = read_structure_set(rtstruct).roi("External")
    assert body.compute_volume_cc() == pytest.approx(volume_cc, rel=0.02)
    again = run_plugin(archive, body_model, series)  # the same input through the same model: nothing twice
    assert sorted(again.stored) == sorted(run.stored)
    assert len(archive.read_series(str(rtstruct.SeriesInstanceUID))) == 1


def test_a_volume_model_with_a_label_map_drops_in(tmp_path):
    path = write_model(tmp_path / "labels.onnx", [
        helper.make_node("Greater", ["ct", "body"], ["in_body"]),
        helper.make_node("Greater", ["ct", "bone"], ["in_bone"]),
        helper.make_node("Cast", ["in_body"], ["body_label"], to=TensorProto.INT64),
        helper.make_node("Cast", ["in_bone"], ["bone_label"], to=TensorProto.INT64),
        helper.make_node("Add", ["body_label", "bone_label"], ["out"])],
        [1, 1, "slices", "rows", "columns"], [1, 1, "slices", "rows", "columns"],
        {"name": "two-labels", "version": "2", "labels": "Body,Bone", "produces": "RTSTRUCT"},
        output_type=TensorProto.INT64,
        initializers=[numpy_helper.from_array(np.array(-300.0, np.float32), "body"),
                      numpy_helper.from_array(np.array(200.0, np.float32), "bone")])
    plugin = OnnxSegmentationPlugin(path)
    assert (plugin.name, plugin.produces, plugin.accepts_sop_classes) == ("two-labels", ("RTSTRUCT",), ())
    ct, _ = phantom_ct(90.0, slices=3, size=32, pixel_mm=8.0)
    (rtstruct,) = plugin.run(ct)
    names = {roi.name for roi in read_structure_set(rtstruct).rois}
    assert names == {"Body", "Bone"}
    assert plugin.run(ct)[0].SOPInstanceUID == rtstruct.SOPInstanceUID  # deterministic UIDs


def test_a_model_with_a_fixed_batch_size_gets_whole_batches(tmp_path):
    plugin = OnnxSegmentationPlugin(threshold_model(tmp_path / "pairs.onnx", [2, 1, "rows", "columns"]))
    hu = np.random.default_rng(5).uniform(-1024, 1000, (5, 7, 9)).astype(np.float32)  # 3 batches, the last padded
    (mask,) = plugin.compute_masks(hu)
    np.testing.assert_array_equal(mask, hu > TARGET_THRESHOLD_HU)


def test_a_model_with_an_input_the_slot_cannot_feed_is_refused_in_a_sentence(tmp_path):
    rgb = threshold_model(tmp_path / "rgb.onnx", [1, 3, 32, 32])
    with pytest.raises(ConfigError, match=r"'test-model' \(rgb.onnx\): input 'ct' is tensor\(float\) of shape "
                                          r"\(1, 3, 32, 32\)"):
        OnnxSegmentationPlugin(rgb)
    flat = threshold_model(tmp_path / "flat.onnx", ["rows", "columns"])
    with pytest.raises(ConfigError, match=r"shape \(rows, columns\)"):
        OnnxSegmentationPlugin(flat)
    fixed = OnnxSegmentationPlugin(threshold_model(tmp_path / "fixed.onnx", ["n", 1, 32, 32]))
    ct, _ = phantom_ct(60.0, slices=2)
    with pytest.raises(GeometryError, match=r"'test-model' takes \(32, 32\) voxels \(rows, columns\); "
                                            r"this CT is \(2, 64, 64\)"):
        fixed.run(ct)


def test_a_model_whose_output_does_not_fit_its_labels_is_refused(tmp_path):
    two_labels = threshold_model(tmp_path / "two.onnx", ["n", 1, "rows", "columns"],
                                 {**BODY_METADATA, "labels": "External,Lungs", "interpreted_types": "EXTERNAL,ORGAN"})
    with pytest.raises(ConfigError, match=r"output 'out' .* 2 channel\(s\) \(one per label: External, Lungs\)"):
        OnnxSegmentationPlugin(two_labels)


@pytest.mark.parametrize(("metadata", "problem"), [
    ({"name": "x", "version": "1"}, "metadata_props lack labels"),
    ({**BODY_METADATA, "produces": "SR"}, "the slot writes RTSTRUCT and/or SEG"),
    ({**BODY_METADATA, "input": "normalised"}, "the slot feeds CT numbers"),
    ({**BODY_METADATA, "labels": "A,B", "interpreted_types": "ORGAN"}, "one interpreted type each"),
])
def test_a_model_whose_metadata_the_slot_cannot_use_is_refused(tmp_path, metadata, problem):
    with pytest.raises(ConfigError, match=problem):
        OnnxSegmentationPlugin(threshold_model(tmp_path / "m.onnx", ["n", 1, "rows", "columns"], metadata))


def test_a_missing_or_broken_model_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        OnnxSegmentationPlugin(tmp_path / "absent.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match=r"broken\.onnx cannot be loaded"):
        OnnxSegmentationPlugin(tmp_path / "broken.onnx")
