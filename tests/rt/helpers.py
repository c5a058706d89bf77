"""Builders for the RT tests: hand-made structure sets, re-oriented RT Doses and an NRRD reader."""

from __future__ import annotations

import copy
import gzip
import math
import re
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from rt.dose import DoseGrid
from rt.grid import VoxelGrid

FOR_UID = "1.2.826.0.1.3680043.8.498.1"


def circle_polygon(cx: float, cy: float, r: float, z: float, n: int = 64) -> np.ndarray:
    """An n-gon with the area of the circle of radius r (mm), as (n, 3) points."""
    scale = math.sqrt(2.0 * math.pi / (n * math.sin(2.0 * math.pi / n)))
    t = 2.0 * math.pi * np.arange(n) / n
    return np.column_stack([cx + r * scale * np.cos(t), cy + r * scale * np.sin(t), np.full(n, z)])


def contour_item(points: np.ndarray, geometric_type: str = "CLOSED_PLANAR") -> Dataset:
    item = Dataset()
    item.ContourGeometricType = geometric_type
    item.NumberOfContourPoints = len(points)
    item.ContourData = [f"{v:.6f}" for v in np.asarray(points).ravel()]
    return item


def build_structure_set(rois: dict[str, list[Dataset]], interpreted_type: str = "ORGAN") -> Dataset:
    """A minimal RTSTRUCT (no ContourImageSequence anywhere) with one ROI per name."""
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.StructureSetLabel = "Test"
    frame = Dataset()
    frame.FrameOfReferenceUID = FOR_UID
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])
    roi_items, contour_items, observations = [], [], []
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ROIName = name
        roi.ReferencedFrameOfReferenceUID = FOR_UID
        roi_items.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ROIDisplayColor = [255, 0, number]
        item.ContourSequence = DicomSequence(contours)
        contour_items.append(item)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = interpreted_type
        observations.append(obs)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    return ds


def sphere_contours(centre: tuple[float, float, float], radius: float, plane_spacing: float) -> list[Dataset]:
    """Circle contours of a sphere on planes at centre_z + (k + 1/2) * plane_spacing."""
    cx, cy, cz = centre
    items = []
    k = math.floor(-radius / plane_spacing - 0.5)
    while True:
        z = (k + 0.5) * plane_spacing
        k += 1
        if z >= radius:
            break
        if abs(z) < radius:
            items.append(contour_item(circle_polygon(cx, cy, math.sqrt(radius**2 - z**2), cz + z)))
    return items


def reorient_dose(ds: Dataset, orientation: str, reverse_frames: bool = False) -> Dataset:
    """The same physical dose as an HFS RT Dose ``ds``, stored as FFS, HFP or FFP.

    With ``reverse_frames`` the frames are stored in reverse order with negative offsets.
    """
    out = copy.deepcopy(ds)
    stored = ds.pixel_array  # (frames, rows, cols) along +z, +y, +x
    nz, ny, nx = stored.shape
    x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    offsets = np.asarray([float(v) for v in ds.GridFrameOffsetVector])
    dz = offsets[1] - offsets[0]
    x1, y1, z1 = x0 + (nx - 1) * dx, y0 + (ny - 1) * dy, z0 + (nz - 1) * dz
    iop, flip_x, flip_y, flip_z = {
        "HFS": ([1, 0, 0, 0, 1, 0], False, False, False),
        "FFS": ([-1, 0, 0, 0, 1, 0], True, False, True),  # normal -z
        "HFP": ([-1, 0, 0, 0, -1, 0], True, True, False),  # normal +z
        "FFP": ([1, 0, 0, 0, -1, 0], False, True, True),  # normal -z
    }[orientation]
    array = stored
    if flip_x:
        array = array[:, :, ::-1]
    if flip_y:
        array = array[:, ::-1, :]
    if flip_z:
        array = array[::-1]
    frame_offsets = np.arange(nz) * dz
    if reverse_frames:
        array = array[::-1]
        frame_offsets = -frame_offsets
        flip_z = not flip_z
    out.ImageOrientationPatient = iop
    out.ImagePositionPatient = [x1 if flip_x else x0, y1 if flip_y else y0, z1 if flip_z else z0]
    out.GridFrameOffsetVector = [f"{v:g}" for v in frame_offsets]
    out.PixelData = np.ascontiguousarray(array).astype("<u4").tobytes()
    return out


def read_nrrd_dose(path: Path) -> DoseGrid:
    """A 3-D NRRD dose (float/double, raw or gzip, axis-aligned LPS space directions) as a DoseGrid."""
    raw = path.read_bytes()
    split = raw.index(b"\n\n")
    fields = {}
    for line in raw[:split].decode("ascii").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip()] = value.strip()
    sizes = [int(v) for v in fields["sizes"].split()]
    vectors = [[float(v) for v in m.split(",")] for m in re.findall(r"\(([^)]*)\)", fields["space directions"])]
    origin = [float(v) for v in re.findall(r"\(([^)]*)\)", fields["space origin"])[0].split(",")]
    if fields.get("space") != "left-posterior-superior" or not np.allclose(vectors, np.diag(np.diag(vectors))):
        raise ValueError("only axis-aligned LPS NRRD volumes are supported here")
    dtype = {"float": "f4", "double": "f8"}[fields["type"]]
    endian = "<" if fields.get("endian", "little") == "little" else ">"
    data = raw[split + 2 :]
    if fields["encoding"] in ("gzip", "gz"):
        data = gzip.decompress(data)
    array = np.frombuffer(data, dtype=endian + dtype).reshape(sizes[::-1]).astype(np.float64)
    spacing = tuple(float(vectors[i][i]) for i in range(3))
    grid = VoxelGrid(tuple(origin), spacing, tuple(sizes[::-1]))  # type: ignore[arg-type]
    return DoseGrid(array, grid, orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
