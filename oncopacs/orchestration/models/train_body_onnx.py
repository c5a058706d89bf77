"""Train and export ``body_threshold.onnx``: the tiny model that proves the ONNX slot (:mod:`..onnx_slot`).

The network is one 1x1 convolution and a sigmoid, ``p = sigmoid(w * HU + b)``, trained by full-batch gradient
descent (numpy, logistic loss) to tell body from air as the threshold ``HU > -300`` does. Its training voxels are
axial slices of the phantom (:func:`oncopacs.phantom.anatomy.build_default_anatomy`: a water cylinder with organs
and a bone rod) with partial volume at the skin and Gaussian noise, plus HU values drawn uniformly over the CT
range, labelled by that threshold. Everything is seeded: the same arguments give the same weights and file.

Input ``hu``: float32 (slices, 1, rows, columns), CT numbers in HU. Output ``probability``: float32, same shape,
the probability that a voxel is inside the body. The metadata (``metadata_props``) name the plug-in, its version,
labels and modality, and record the training metrics (key ``training``, JSON).

Run it (needs the ``onnx`` package, in the test extra)::

    python -m oncopacs.orchestration.models.train_body_onnx [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.uid import CTImageStorage

from oncopacs.phantom.anatomy import build_default_anatomy
from oncopacs.phantom.geometry import centred_grid

log = logging.getLogger(__name__)

#: The shipped model file, next to this module.
MODEL_PATH = Path(__file__).with_name("body_threshold.onnx")
#: What the network learns: body = HU above this.
TARGET_THRESHOLD_HU = -300.0
MODEL_NAME = "onnx-body"
MODEL_VERSION = "1.0.0"
OPSET = 17
IR_VERSION = 8  # read by every onnxruntime since 1.10

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TrainingSettings:
    """Seed, data (phantom body radii in mm, uniform HU samples, noise in HU) and gradient descent settings."""

    seed: int = 19
    body_radii_mm: tuple[float, ...] = (60.0, 85.0, 110.0, 135.0)
    slice_size: int = 64
    pixel_mm: float = 4.5
    supersampling: int = 4
    noise_hu: float = 15.0
    uniform_samples: int = 40_000
    epochs: int = 1000
    learning_rate: float = 16.0


@dataclass(frozen=True, slots=True)
class TrainedModel:
    """The weights in HU units (``logit = weight_per_hu * HU + bias``) and the training metrics."""

    weight_per_hu: float
    bias: float
    loss: float
    accuracy: float
    boundary_hu: float  # where p = 0.5: -bias / weight_per_hu
    validation_dice: float  # on phantom slices not trained on, against HU > TARGET_THRESHOLD_HU
    samples: int

    def compute_probability(self, hu: npt.ArrayLike) -> FloatArray:
        """The network's output for ``hu`` (HU), in numpy (float64)."""
        logit = self.weight_per_hu * np.asarray(hu, dtype=np.float64) + self.bias
        return np.asarray(0.5 * (1.0 + np.tanh(0.5 * logit)))  # the logistic function, without overflow


def compute_phantom_slice_hu(body_radius_mm: float, rng: np.random.Generator, *, size: int = 64,
                             pixel_mm: float = 4.5, z_mm: float = 0.0, supersampling: int = 4,
                             noise_hu: float = 15.0) -> FloatArray:
    """One axial slice (size x size, HU) of the phantom: each pixel the mean of ``supersampling``² samples, plus noise.

    The averaging gives the skin the partial-volume values between air and water a real CT has.
    """
    grid = centred_grid((1, size * supersampling, size * supersampling),
                        (pixel_mm / supersampling, pixel_mm / supersampling, pixel_mm))
    xx, yy = grid.compute_slice_xy_mm()
    fine = build_default_anatomy(grid, body_radius_mm=body_radius_mm).compute_hu(xx, yy, z_mm)
    coarse = fine.reshape(size, supersampling, size, supersampling).mean(axis=(1, 3))
    return np.asarray(coarse + rng.normal(0.0, noise_hu, coarse.shape))


def compute_dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def build_training_hu(settings: TrainingSettings) -> FloatArray:
    """The training voxels (HU): phantom slices at a few levels and body radii, and uniform CT numbers."""
    rng = np.random.default_rng(settings.seed)
    slices = [compute_phantom_slice_hu(radius, rng, size=settings.slice_size, pixel_mm=settings.pixel_mm,
                                       z_mm=z_mm, supersampling=settings.supersampling, noise_hu=settings.noise_hu)
              for radius in settings.body_radii_mm for z_mm in (-20.0, 0.0, 30.0)]
    uniform = rng.uniform(-1024.0, 1500.0, settings.uniform_samples)
    return np.concatenate([*(s.ravel() for s in slices), uniform])


def train(settings: TrainingSettings | None = None) -> TrainedModel:
    """Fit ``sigmoid(w * HU + b)`` to ``HU > TARGET_THRESHOLD_HU`` by full-batch gradient descent (seeded)."""
    settings = settings or TrainingSettings()
    hu = build_training_hu(settings)
    target = (hu > TARGET_THRESHOLD_HU).astype(np.float64)
    centre, scale = float(hu.mean()), float(hu.std())  # standardised input: the descent is well conditioned
    x = (hu - centre) / scale
    w, b = 0.0, 0.0
    for _ in range(settings.epochs):
        p = 0.5 * (1.0 + np.tanh(0.5 * (w * x + b)))
        error = p - target
        w -= settings.learning_rate * float(error @ x) / x.size
        b -= settings.learning_rate * float(error.mean())
    weight_per_hu, bias = w / scale, b - w * centre / scale  # the standardisation folded into the weights
    partial = TrainedModel(weight_per_hu, bias, 0.0, 0.0, -bias / weight_per_hu, 0.0, int(hu.size))
    p = np.clip(partial.compute_probability(hu), 1e-12, 1.0 - 1e-12)
    loss = float(-(target * np.log(p) + (1.0 - target) * np.log(1.0 - p)).mean())
    accuracy = float(((p > 0.5) == (target > 0.5)).mean())
    held_out = np.random.default_rng(settings.seed + 1)
    dice = [compute_dice(partial.compute_probability(s) > 0.5, s > TARGET_THRESHOLD_HU)
            for s in (compute_phantom_slice_hu(radius, held_out, size=settings.slice_size, pixel_mm=settings.pixel_mm,
                                               z_mm=10.0, supersampling=settings.supersampling,
                                               noise_hu=settings.noise_hu) for radius in (70.0, 100.0, 125.0))]
    return TrainedModel(weight_per_hu, bias, loss, accuracy, -bias / weight_per_hu, min(dice), int(hu.size))


def build_metadata(model: TrainedModel, settings: TrainingSettings) -> dict[str, str]:
    """The ``metadata_props`` :class:`oncopacs.orchestration.onnx_slot.OnnxSegmentationPlugin` reads."""
    training = {"target": f"HU > {TARGET_THRESHOLD_HU:g}", "method": "full-batch gradient descent, logistic loss",
                "settings": asdict(settings), "samples": model.samples, "loss": round(model.loss, 6),
                "accuracy": round(model.accuracy, 6), "boundary_hu": round(model.boundary_hu, 3),
                "validation_dice": round(model.validation_dice, 6)}
    return {"name": MODEL_NAME, "version": MODEL_VERSION, "modalities": "CT", "sop_classes": str(CTImageStorage),
            "labels": "External",
            "interpreted_types": "EXTERNAL", "produces": "RTSTRUCT,SEG", "input": "HU",
            "training": json.dumps(training, sort_keys=True)}


def export_onnx(model: TrainedModel, settings: TrainingSettings, path: Path) -> None:
    """Write ``model`` as an ONNX file: Conv (1x1, one channel) then Sigmoid, with its metadata."""
    import onnx  # the test extra: only who retrains the model needs it
    from onnx import TensorProto, helper, numpy_helper

    shape: list[str | int | None] = ["slices", 1, "rows", "columns"]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["hu", "weight", "bias"], ["logit"], kernel_shape=[1, 1]),
         helper.make_node("Sigmoid", ["logit"], ["probability"])],
        "body_threshold",
        [helper.make_tensor_value_info("hu", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, shape)],
        initializer=[numpy_helper.from_array(np.full((1, 1, 1, 1), model.weight_per_hu, np.float32), "weight"),
                     numpy_helper.from_array(np.full((1,), model.bias, np.float32), "bias")])
    onnx_model = helper.make_model(graph, producer_name="oncopacs", producer_version=MODEL_VERSION,
                                   opset_imports=[helper.make_opsetid("", OPSET)],
                                   doc_string="Body outline of a CT: sigmoid(w * HU + b), trained to HU > -300.")
    onnx_model.ir_version = IR_VERSION
    helper.set_model_props(onnx_model, build_metadata(model, settings))
    onnx.checker.check_model(onnx_model)
    path.write_bytes(onnx_model.SerializeToString(deterministic=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the body-threshold network and export it as ONNX.")
    parser.add_argument("--output", type=Path, default=MODEL_PATH, help=f"the .onnx file (default {MODEL_PATH})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = TrainingSettings()
    model = train(settings)
    export_onnx(model, settings, args.output)
    log.info("wrote %s: w = %.6g /HU, b = %.6g, boundary %.2f HU, loss %.4g, accuracy %.5f, validation Dice %.5f",
             args.output, model.weight_per_hu, model.bias, model.boundary_hu, model.loss, model.accuracy,
             model.validation_dice)


if __name__ == "__main__":
    main()
