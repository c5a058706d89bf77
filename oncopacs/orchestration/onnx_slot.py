"""The ONNX model slot: a segmentation network run by onnxruntime as an analysis plug-in (``oncopacs.analyses``).

A model is one ``.onnx`` file. The slot feeds it the CT in HU and writes what it segments as an RT Structure Set
and/or a DICOM Segmentation with the project's writers (:mod:`rt.rtstruct_writer`, :mod:`rt.seg_writer`), naming
the model, its version and the file's SHA-256 as provenance. The model says who it is in its ``metadata_props``:

- ``name``, ``version`` (required): the plug-in's name and version, written into every product;
- ``labels`` (required): comma-separated structure names, one per output channel (``External``, ``Liver``);
- ``interpreted_types``: comma-separated RTROIInterpretedType per label (default ``ORGAN``; ``EXTERNAL`` for a body);
- ``modalities`` (default ``CT``), ``sop_classes`` (default: any), ``produces`` (default ``RTSTRUCT,SEG``);
- ``input``: ``HU`` if present (the only input the slot feeds: a model that wants another scale rescales inside).

Its one input is float32, either slices ``(slices, 1, rows, columns)``, run in batches (a fixed batch size is
honoured), or the volume ``(1, 1, slices, rows, columns)``; a dimension may be symbolic, a fixed one must match the
CT. Its first output has the input's shape with one channel per label holding a probability (float; a voxel is in
the structure when it is above 0.5), or a single channel holding a label map (integers: 0 background, ``i`` the
``i``-th label). A model the slot cannot use is refused when it loads, with a :class:`ConfigError` naming the model
and the shape. A hospital's own model drops in as a subclass naming its file::

    class LiverModel(OnnxSegmentationPlugin):
        model_path = Path("/opt/models/liver.onnx")

declared under ``[project.entry-points."oncopacs.analyses"]`` as ``liver = "my_package.models:LiverModel"``.
:class:`BodyThresholdOnnx` is the model OncoPACS trains and ships itself
(:mod:`oncopacs.orchestration.models.train_body_onnx`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import ClassVar

import highdicom as hd
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import SimpleITK as sitk
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from fusion.volume import load_series
from oncopacs.errors import ConfigError, GeometryError
from rt.autocontour import AutoContourParameters, AutoContourResult, ContouredStructure
from rt.grid import MM3_PER_CC
from rt.rtstruct_writer import MANUFACTURER, AlgorithmIdentity, build_autocontour_rtstruct
from rt.seg_writer import build_autocontour_seg

log = logging.getLogger(__name__)

#: A voxel is in a structure when the model's probability for it is above this.
PROBABILITY_THRESHOLD = 0.5
#: Slices fed at once to a model whose batch size is symbolic.
DEFAULT_BATCH_SLICES = 16
_PRODUCTS = ("RTSTRUCT", "SEG")
_COLOURS = ((0, 200, 0), (255, 0, 0), (0, 160, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0))
_INTEGER_TYPES = {f"tensor({t})" for t in ("uint8", "int8", "uint16", "int16", "int32", "int64")}

Dim = int | str | None  # onnxruntime's view of a dimension: fixed (int) or symbolic (name or None)
BoolVolume = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class OnnxModelCard:
    """What a model's ``metadata_props`` say it is (see the module doc), and the SHA-256 of its file."""

    name: str
    version: str
    labels: tuple[str, ...]
    interpreted_types: tuple[str, ...]
    modalities: tuple[str, ...]
    sop_classes: tuple[str, ...]
    produces: tuple[str, ...]
    sha256: str
    file_name: str

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], *, sha256: str, file_name: str) -> OnnxModelCard:
        def values(key: str, default: str = "") -> tuple[str, ...]:
            return tuple(v.strip() for v in metadata.get(key, default).split(",") if v.strip())

        missing = [key for key in ("name", "version", "labels") if not metadata.get(key, "").strip()]
        if missing:
            raise ConfigError(f"ONNX model {file_name}: its metadata_props lack {', '.join(missing)} "
                              "(name, version and labels are required)")
        name, labels = metadata["name"].strip(), values("labels")
        types = values("interpreted_types", ",".join("ORGAN" for _ in labels))
        if len(types) != len(labels) or len(set(labels)) != len(labels):
            raise ConfigError(f"ONNX model {name!r}: labels {list(labels)} must be distinct and have one "
                              f"interpreted type each, got {list(types)}")
        produces = tuple(p.upper() for p in values("produces", ",".join(_PRODUCTS)))
        if not produces or not set(produces) <= set(_PRODUCTS):
            raise ConfigError(f"ONNX model {name!r}: produces {list(produces)}; the slot writes RTSTRUCT and/or SEG")
        if metadata.get("input", "HU").strip().upper() != "HU":
            raise ConfigError(f"ONNX model {name!r} wants input {metadata['input']!r}; the slot feeds CT numbers (HU)")
        return cls(name, metadata["version"].strip(), labels, tuple(t.upper() for t in types),
                   values("modalities", "CT"), values("sop_classes"), produces, sha256, file_name)


@dataclass(frozen=True, slots=True)
class _Layout:
    """How the slot feeds a model: slices in batches (``batch`` None: any size) or the whole volume."""

    per_slice: bool
    batch: int | None
    spatial: tuple[Dim, ...]  # (rows, columns) or (slices, rows, columns) as the model declares them
    label_map: bool  # the output is a label map (integers), not probabilities


class OnnxSegmentationPlugin:
    """An analysis plug-in running the segmentation network in an ``.onnx`` file (see the module doc).

    ``path``: the model file; a subclass may name it as ``model_path`` instead. ``providers``: onnxruntime's
    execution providers, in order of preference.
    """

    model_path: ClassVar[Path | None] = None

    def __init__(self, path: str | Path | None = None, *,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        chosen = path if path is not None else type(self).model_path
        if chosen is None:
            raise ConfigError(f"{type(self).__name__} needs the path of an .onnx file (or a model_path)")
        self.path = Path(chosen)
        if not self.path.is_file():
            raise ConfigError(f"ONNX model file {self.path} does not exist")
        content = self.path.read_bytes()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: onnxruntime's warnings are not ours to print
        try:
            self._session = ort.InferenceSession(content, sess_options=options, providers=list(providers))
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise ConfigError(f"ONNX model {self.path.name} cannot be loaded: {exc}") from exc
        self.card = OnnxModelCard.from_metadata(self._session.get_modelmeta().custom_metadata_map,
                                                sha256=hashlib.sha256(content).hexdigest(),
                                                file_name=self.path.name)
        self.name, self.version = self.card.name, self.card.version
        self.accepts_modalities, self.accepts_sop_classes = self.card.modalities, self.card.sop_classes
        self.produces = self.card.produces
        self._layout = self._read_layout()

    def _refuse(self, problem: str) -> ConfigError:
        return ConfigError(f"ONNX model {self.name!r} ({self.path.name}): {problem}")

    def _read_layout(self) -> _Layout:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            raise self._refuse(f"it takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                               "the slot feeds one, the CT in HU")
        given, produced = inputs[0], outputs[0]
        shape: list[Dim] = list(given.shape)
        usage = "the slot feeds float32 (slices, 1, rows, columns) or (1, 1, slices, rows, columns)"
        if given.type != "tensor(float)" or len(shape) not in (4, 5) or _fixed(shape[1]) not in (None, 1) or (
                len(shape) == 5 and _fixed(shape[0]) not in (None, 1)):
            raise self._refuse(f"input {given.name!r} is {given.type} of shape {_show(shape)}; {usage}")
        out_shape: list[Dim] = list(produced.shape)
        label_map = produced.type in _INTEGER_TYPES
        channels = 1 if label_map else len(self.card.labels)
        if (produced.type != "tensor(float)" and not label_map) or len(out_shape) != len(shape) or (
                _fixed(out_shape[1]) not in (None, channels)):
            raise self._refuse(f"output {produced.name!r} is {produced.type} of shape {_show(out_shape)}; the slot "
                               f"reads float probabilities with {len(self.card.labels)} channel(s) (one per label: "
                               f"{', '.join(self.card.labels)}) or one channel of integer labels, shaped as the input "
                               f"{_show(shape)}")
        per_slice = len(shape) == 4
        return _Layout(per_slice, _fixed(shape[0]) if per_slice else None, tuple(shape[2:]), label_map)

    def run(self, datasets: Sequence[Dataset]) -> list[Dataset]:
        """The products (``produces``) of the model on the CT series ``datasets``.

        Their UIDs derive from the plug-in, its version, the model file's SHA-256 and the exact input instances: the
        same series through the same model gives the same objects (the archive keeps the first).
        """
        ct = load_series(list(datasets))
        hu = sitk.GetArrayFromImage(ct).astype(np.float32, copy=False)  # (slices, rows, columns), HU
        masks = self.compute_masks(hu)
        spacing = tuple(float(s) for s in ct.GetSpacing())
        voxel_cc = float(np.prod(spacing)) / MM3_PER_CC
        structures = tuple(_structure(label, kind, _COLOURS[i % len(_COLOURS)], mask, voxel_cc, self.name)
                           for i, (label, kind, mask) in enumerate(zip(self.card.labels, self.card.interpreted_types,
                                                                       masks, strict=True)))
        origin = tuple(float(v) for v in ct.GetOrigin())
        result = AutoContourResult(structures, AutoContourParameters(), (origin[0], origin[1], origin[2]),
                                   (spacing[0], spacing[1], spacing[2]), tuple(float(v) for v in ct.GetDirection()),
                                   self.name, self.version)
        algorithm = AlgorithmIdentity(self.name, self.version)
        products = []
        if "RTSTRUCT" in self.produces:
            products.append(self._describe_rtstruct(build_autocontour_rtstruct(result, datasets, algorithm=algorithm)))
        if "SEG" in self.produces:
            products.append(self._describe_seg(build_autocontour_seg(result, datasets, algorithm=algorithm)))
        inputs = sorted(str(ds.SOPInstanceUID) for ds in datasets)
        for product in products:
            seed = [self.name, self.version, self.card.sha256, str(product.Modality)]
            product.SeriesInstanceUID = generate_uid(entropy_srcs=[*seed, "series", *inputs])
            product.SOPInstanceUID = generate_uid(entropy_srcs=[*seed, *inputs])
            if getattr(product, "file_meta", None) is not None:
                product.file_meta.MediaStorageSOPInstanceUID = product.SOPInstanceUID
        log.info("%s %s segmented series %s (%d slices)", self.name, self.version,
                 datasets[0].get("SeriesInstanceUID", ""), hu.shape[0])
        return products

    def compute_masks(self, hu: npt.NDArray[np.float32]) -> tuple[BoolVolume, ...]:
        """One boolean mask (slices, rows, columns) per label of the CT ``hu`` (HU, same shape)."""
        if hu.ndim != 3 or 0 in hu.shape:
            raise GeometryError(f"a CT volume needs 3 non-empty dimensions (slices, rows, columns), got {hu.shape}")
        expected = hu.shape[1:] if self._layout.per_slice else hu.shape
        for declared, actual in zip(self._layout.spatial, expected, strict=True):
            if _fixed(declared) not in (None, actual):
                axes = "(rows, columns)" if self._layout.per_slice else "(slices, rows, columns)"
                raise GeometryError(f"ONNX model {self.name!r} takes {_show(list(self._layout.spatial))} voxels "
                                    f"{axes}; this CT is {_show(list(hu.shape))} (slices, rows, columns)")
        if not self._layout.per_slice:
            return self._read_output(self._infer(hu[np.newaxis, np.newaxis])[0], hu.shape)
        batch = self._layout.batch or DEFAULT_BATCH_SLICES
        parts = []
        for start in range(0, hu.shape[0], batch):
            chunk = hu[start:start + batch]
            fill = batch - chunk.shape[0] if self._layout.batch else 0  # a fixed batch size: pad with air
            padded = np.concatenate([chunk, np.full((fill, *hu.shape[1:]), -1000.0, np.float32)]) if fill else chunk
            parts.append(self._infer(padded[:, np.newaxis])[:chunk.shape[0]])
        return self._read_output(np.concatenate(parts, axis=0), hu.shape)

    def _infer(self, feed: npt.NDArray[np.float32]) -> npt.NDArray[np.generic]:
        given = self._session.get_inputs()[0].name
        out = np.asarray(self._session.run(None, {given: np.ascontiguousarray(feed)})[0])
        channels = 1 if self._layout.label_map else len(self.card.labels)
        if out.shape != (feed.shape[0], channels, *feed.shape[2:]):
            raise self._refuse(f"fed {_show(list(feed.shape))}, it returned {_show(list(out.shape))}; the slot "
                               f"needs {_show([feed.shape[0], channels, *feed.shape[2:]])}")
        return out

    def _read_output(self, out: npt.NDArray[np.generic], shape: tuple[int, ...]) -> tuple[BoolVolume, ...]:
        """Masks from the output: slices (slices, channels, rows, columns) or volume (channels, slices, ...)."""
        by_channel = np.moveaxis(out, 1, 0) if self._layout.per_slice else out
        if self._layout.label_map:
            labels = by_channel[0]
            return tuple(np.asarray(labels == i) for i in range(1, len(self.card.labels) + 1))
        if not np.isfinite(by_channel).all():
            raise self._refuse("it returned non-finite probabilities")
        return tuple(np.asarray(channel > PROBABILITY_THRESHOLD).reshape(shape) for channel in by_channel)

    def _describe_rtstruct(self, ds: Dataset) -> Dataset:
        for item in ds.StructureSetROISequence:
            item.ROIGenerationDescription = f"{self.name} {self.version} (ONNX model, p > 0.5)"[:64]
        return ds

    def _describe_seg(self, seg: Dataset) -> Dataset:
        """The Algorithm Identification of every segment: an AI model (CID 7162), its file and its SHA-256."""
        parameters = {"model": self.card.file_name, "sha256": self.card.sha256,
                      "threshold": f"{PROBABILITY_THRESHOLD:g}"}
        for item in seg.SegmentSequence:
            item.SegmentationAlgorithmIdentificationSequence = hd.AlgorithmIdentificationSequence(
                name=self.name, family=codes.cid7162.ArtificialIntelligence, version=self.version,
                source=MANUFACTURER, parameters=parameters)
        return seg


class BodyThresholdOnnx(OnnxSegmentationPlugin):
    """The model OncoPACS ships: the body outline of a CT as ``sigmoid(w * HU + b)``, trained to ``HU > -300``."""

    model_path = Path(str(files("oncopacs.orchestration.models").joinpath("body_threshold.onnx")))


def _fixed(dim: Dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _show(shape: Sequence[Dim]) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + ")"


def _structure(label: str, interpreted_type: str, colour: tuple[int, int, int], mask: BoolVolume, voxel_cc: float,
               model: str) -> ContouredStructure:
    mask.setflags(write=False)
    found = bool(mask.any())
    return ContouredStructure(label, interpreted_type, colour, mask, float(np.count_nonzero(mask)) * voxel_cc,
                              "" if found else f"{model} found no voxel of {label}")


__all__ = ["PROBABILITY_THRESHOLD", "BodyThresholdOnnx", "OnnxModelCard", "OnnxSegmentationPlugin"]
