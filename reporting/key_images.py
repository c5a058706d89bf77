"""Key images for reports: a coronal maximum-intensity projection of a PET series, as PNG."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from oncopacs.archive.ingest import Archive
from oncopacs.index.query import find_instances

MIP_HEIGHT_PX = 360


def build_mip_png(archive: Archive, series_uid: str) -> str | None:
    """Base64 PNG of the coronal MIP (inverted grey, head up) of ``series_uid``; None without pixel data."""

    with archive.index.reading() as session:
        stored = find_instances(session, {"SeriesInstanceUID": series_uid})
    slices = []
    for instance in stored:
        ds = archive.read_dataset(instance.file_path, instance.sha256)
        if "PixelData" not in ds or "ImagePositionPatient" not in ds:
            continue
        values = (ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1)
                  + float(ds.get("RescaleIntercept", 0) or 0))
        slices.append((float(ds.ImagePositionPatient[2]), values, ds.get("PixelSpacing", [1, 1]),
                       ds.get("SliceThickness")))
    if not slices or any(s[1].ndim != 2 for s in slices):
        return None
    slices.sort(key=lambda item: -item[0])  # superior (largest z in LPS) first: head at the top
    volume = np.stack([s[1] for s in slices])  # (z, rows, columns)
    mip = volume.max(axis=1)  # coronal: project along the anterior-posterior rows
    top = float(mip.max())
    scaled = np.zeros_like(mip) if top <= 0 else np.clip(mip / top, 0.0, 1.0)
    image = Image.fromarray(np.uint8(255 - 255 * scaled))
    column_mm = float(slices[0][2][1])
    z_mm = abs(slices[0][0] - slices[-1][0]) / max(len(slices) - 1, 1) or float(slices[0][3] or column_mm)
    aspect = (z_mm * mip.shape[0]) / (column_mm * mip.shape[1])
    image = image.resize((max(1, round(MIP_HEIGHT_PX / aspect)), MIP_HEIGHT_PX), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
