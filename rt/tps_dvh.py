"""The planning system's own DVHs stored in an RT Dose (DVH Sequence), and comparison with ours.

Each DVHSequence item holds, for one ROI (DVHReferencedROISequence > ReferencedROINumber, the
item with DVHROIContributionType INCLUDED, else the first):

- DVHType CUMULATIVE or DIFFERENTIAL (NATURAL is not supported);
- DoseUnits GY (RELATIVE is not supported) and DVHDoseScaling (dose = stored x scaling);
- DVHVolumeUnits CM3 or PERCENT (PER_U is not supported);
- DVHData = D1 V1 D2 V2 ... Dn Vn: bin widths D_i (dose units) and volumes V_i. Bin i spans
  [E_i, E_i + D_i) with E_1 = 0, E_{i+1} = E_i + D_i. CUMULATIVE: V_i is the volume receiving
  >= E_i (V_1 the whole ROI); DIFFERENTIAL: the volume with dose in bin i.
- optional DVHMinimumDose / DVHMeanDose / DVHMaximumDose (dose units, not scaled).

:meth:`TpsDVH.to_dvh` turns it into a :class:`~rt.dvh.DVH` (uniform bins, cumulative linear
between edges; non-uniform bins are resampled on the narrowest width), so every TG-263 metric
evaluates the same way on both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from rt.dvh import DVH, compute_metric
from rt.errors import DicomInputError

_WIDTH_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class TpsDVH:
    """One DVH as stored by the planning system (doses Gy, volumes in ``volume_units``)."""

    roi_number: int
    dvh_type: str  # CUMULATIVE | DIFFERENTIAL
    volume_units: str  # CM3 | PERCENT
    bin_widths_gy: npt.NDArray[np.float64] = field(repr=False)
    volumes: npt.NDArray[np.float64] = field(repr=False)
    dose_type: str = ""
    min_gy: float | None = None
    mean_gy: float | None = None
    max_gy: float | None = None

    @property
    def dose_edges_gy(self) -> npt.NDArray[np.float64]:
        """Bin edges E_0 = 0 .. E_n (n + 1 values), Gy."""
        return np.concatenate([[0.0], np.cumsum(self.bin_widths_gy)])

    @property
    def cumulative_volumes(self) -> npt.NDArray[np.float64]:
        """Volume receiving >= each edge (n + 1 values, the last 0), in ``volume_units``."""
        if self.dvh_type == "CUMULATIVE":
            return np.concatenate([self.volumes, [0.0]])
        return np.concatenate([np.cumsum(self.volumes[::-1])[::-1], [0.0]])

    @property
    def total_volume(self) -> float:
        """The ROI volume in ``volume_units`` (V at 0 Gy)."""
        return float(self.cumulative_volumes[0])

    def to_dvh(self, volume_cc: float | None = None, roi_name: str = "") -> DVH:
        """This DVH as a :class:`~rt.dvh.DVH` (cc); PERCENT volumes need the ROI's ``volume_cc``.

        Min/Max default to the first/last bin with volume (its lower/upper edge), Mean to
        ``sum_i v_i (E_i + D_i / 2) / V`` when the item gives none.
        """
        edges, cumulative = self.dose_edges_gy, self.cumulative_volumes.astype(np.float64)
        if self.volume_units == "PERCENT":
            if volume_cc is None or volume_cc <= 0.0:
                raise DicomInputError("DVHVolumeUnits", "PERCENT needs the ROI volume (volume_cc)")
            cumulative = cumulative / 100.0 * volume_cc
        widths = np.asarray(self.bin_widths_gy, dtype=np.float64)
        width = float(widths.min())
        if np.all(np.abs(widths - width) <= _WIDTH_TOLERANCE * max(width, 1.0)):
            uniform_edges, uniform_cumulative = np.arange(edges.size, dtype=np.float64) * width, cumulative
        else:
            uniform_edges = np.arange(int(np.ceil(edges[-1] / width - 1e-9)) + 1, dtype=np.float64) * width
            uniform_cumulative = np.interp(uniform_edges, edges, cumulative, right=0.0)
        differential = np.append(uniform_cumulative[:-1] - uniform_cumulative[1:], uniform_cumulative[-1])
        bin_volumes = cumulative[:-1] - cumulative[1:]
        occupied = np.flatnonzero(bin_volumes > 0.0)
        total = float(cumulative[0])
        if occupied.size == 0 or total <= 0.0:
            raise DicomInputError("DVHData", f"empty DVH for ROI {self.roi_number}")
        centres = edges[:-1] + widths / 2.0
        mean = self.mean_gy if self.mean_gy is not None else float(np.dot(bin_volumes, centres) / bin_volumes.sum())
        return DVH(
            roi_name=roi_name or f"ROI {self.roi_number}",
            bin_width_gy=width,
            dose_edges_gy=uniform_edges,
            differential_volume_cc=differential,
            cumulative_volume_cc=uniform_cumulative,
            volume_cc=total,
            min_gy=self.min_gy if self.min_gy is not None else float(edges[occupied[0]]),
            mean_gy=mean,
            max_gy=self.max_gy if self.max_gy is not None else float(edges[occupied[-1] + 1]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "roi_number": self.roi_number,
            "dvh_type": self.dvh_type,
            "volume_units": self.volume_units,
            "dose_type": self.dose_type,
            "bin_widths_gy": self.bin_widths_gy.tolist(),
            "volumes": self.volumes.tolist(),
            "min_gy": self.min_gy,
            "mean_gy": self.mean_gy,
            "max_gy": self.max_gy,
        }


def _optional_float(item: Dataset, keyword: str, scale: float) -> float | None:
    value = item.get(keyword)
    return None if value is None or value == "" else float(value) * scale


def _read_item(item: Dataset) -> TpsDVH:
    refs = item.get("DVHReferencedROISequence") or []
    if not refs or "ReferencedROINumber" not in refs[0]:
        raise DicomInputError("DVHReferencedROISequence")
    included = [r for r in refs if str(r.get("DVHROIContributionType", "INCLUDED")).upper() == "INCLUDED"]
    roi_number = int((included or refs)[0].ReferencedROINumber)
    dvh_type = str(item.get("DVHType", "")).upper()
    if dvh_type not in ("CUMULATIVE", "DIFFERENTIAL"):
        raise DicomInputError("DVHType", f"{dvh_type!r} not supported (CUMULATIVE or DIFFERENTIAL)")
    units = str(item.get("DoseUnits", "")).upper()
    if units != "GY":
        raise DicomInputError("DoseUnits", f"{units!r} not supported (GY)")
    volume_units = str(item.get("DVHVolumeUnits", "")).upper()
    if volume_units not in ("CM3", "PERCENT"):
        raise DicomInputError("DVHVolumeUnits", f"{volume_units!r} not supported (CM3 or PERCENT)")
    data = np.asarray(item.get("DVHData") or [], dtype=np.float64).ravel()
    if data.size == 0 or data.size % 2:
        raise DicomInputError("DVHData", "empty or odd length")
    scaling = float(item.get("DVHDoseScaling", 1.0) or 1.0)
    widths, volumes = data[0::2] * scaling, data[1::2]
    if np.any(widths <= 0.0) or np.any(volumes < 0.0):
        raise DicomInputError("DVHData", "non-positive bin width or negative volume")
    return TpsDVH(
        roi_number=roi_number,
        dvh_type=dvh_type,
        volume_units=volume_units,
        bin_widths_gy=widths,
        volumes=volumes,
        dose_type=str(item.get("DoseType", "")),
        min_gy=_optional_float(item, "DVHMinimumDose", 1.0),
        mean_gy=_optional_float(item, "DVHMeanDose", 1.0),
        max_gy=_optional_float(item, "DVHMaximumDose", 1.0),
    )


def read_tps_dvhs(ds: Dataset) -> dict[int, TpsDVH]:
    """The planning system's DVHs of an RT Dose by ROI number ({} without a DVHSequence).

    When one ROI has several items the first is kept.
    """
    result: dict[int, TpsDVH] = {}
    for item in ds.get("DVHSequence") or []:
        dvh = _read_item(item)
        result.setdefault(dvh.roi_number, dvh)
    return result


def build_dvh_item(dvh: DVH, roi_number: int, *, dvh_type: str = "CUMULATIVE", volume_units: str = "CM3",
                   dose_scaling: float = 1.0, dose_type: str = "PHYSICAL") -> Dataset:
    """A DVHSequence item holding ``dvh`` (our DVH, uniform bins) for ROI ``roi_number``.

    Bin widths are stored as ``bin_width_gy / dose_scaling``; trailing empty bins are dropped.
    """
    if dvh_type not in ("CUMULATIVE", "DIFFERENTIAL") or volume_units not in ("CM3", "PERCENT"):
        raise ValueError(f"unsupported DVHType {dvh_type!r} or DVHVolumeUnits {volume_units!r}")
    last = int(np.flatnonzero(dvh.differential_volume_cc > 0.0)[-1]) + 1
    volumes = (dvh.cumulative_volume_cc if dvh_type == "CUMULATIVE" else dvh.differential_volume_cc)[:last]
    if volume_units == "PERCENT":
        volumes = volumes * 100.0 / dvh.volume_cc
    data = np.empty(2 * last)
    data[0::2], data[1::2] = dvh.bin_width_gy / dose_scaling, volumes
    ref = Dataset()
    ref.ReferencedROINumber = int(roi_number)
    ref.DVHROIContributionType = "INCLUDED"
    item = Dataset()
    item.DVHReferencedROISequence = Sequence([ref])
    item.DVHType, item.DoseUnits, item.DoseType = dvh_type, "GY", dose_type
    item.DVHDoseScaling = f"{dose_scaling:.10g}"
    item.DVHVolumeUnits = volume_units
    item.DVHNumberOfBins = last
    item.DVHData = [f"{v:.10g}" for v in data]  # DS: at most 16 characters
    item.DVHMinimumDose, item.DVHMeanDose, item.DVHMaximumDose = (
        f"{v:.10g}" for v in (dvh.min_gy, dvh.mean_gy, dvh.max_gy)
    )
    return item


@dataclass(frozen=True, slots=True)
class MetricAgreement:
    """One metric on our DVH and on the planning system's; difference = ours - tps (metric units)."""

    metric: str
    ours: float
    tps: float

    @property
    def difference(self) -> float:
        return self.ours - self.tps

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "ours": self.ours, "tps": self.tps, "difference": self.difference}


def compare_with_tps(ours: DVH, tps: TpsDVH, metrics: list[str] | tuple[str, ...],
                     prescription_gy: float | None = None) -> list[MetricAgreement]:
    """Each TG-263 metric evaluated on ``ours`` and on ``tps`` (PERCENT volumes scaled to ours).

    A CM3 TPS DVH keeps its own volume, so ``[%]`` metrics are relative to each side's volume.
    """
    theirs = tps.to_dvh(volume_cc=ours.volume_cc, roi_name=ours.roi_name)
    return [
        MetricAgreement(m, compute_metric(ours, m, prescription_gy), compute_metric(theirs, m, prescription_gy))
        for m in metrics
    ]
