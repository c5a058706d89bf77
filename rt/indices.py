"""Plan-quality indices from DVHs: homogeneity, conformity and the generalised EUD.

- Homogeneity index (ICRU 83): ``HI = (D2% - D98%) / D50%`` of the target (0 = perfectly
  homogeneous).
- Paddick conformity index: ``CI = TV_PIV^2 / (TV x PIV)`` with TV the target volume (cc),
  PIV the prescription isodose volume (cc; the volume of the whole dose grid, or of the BODY,
  receiving >= the prescription) and TV_PIV the target volume receiving >= the prescription.
  1 = perfect; it is the product of coverage ``TV_PIV / TV`` and selectivity ``TV_PIV / PIV``.
- RTOG conformity index: ``CI = PIV / TV`` (1 = perfect, > 1 spill, < 1 under-coverage).
- Generalised equivalent uniform dose (Niemierko): ``gEUD = (sum_i v_i D_i^a / V)^(1/a)`` (Gy)
  over the differential DVH bins (v_i cc, D_i Gy the bin centre clipped to [Min, Max], V the
  ROI volume with dose). a = 1 gives the mean dose, a -> +inf the maximum, a -> -inf the
  minimum; a is tissue-specific (serial OARs large positive, targets negative).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rt.dose import DoseGrid
from rt.dvh import DVH
from rt.errors import MetricError, RTError


def compute_homogeneity_index(target: DVH) -> float:
    """ICRU 83 homogeneity index ``(D2% - D98%) / D50%`` of a target DVH (dimensionless)."""
    d2 = target.compute_dose_at_volume_gy(0.02 * target.volume_cc)
    d98 = target.compute_dose_at_volume_gy(0.98 * target.volume_cc)
    d50 = target.compute_dose_at_volume_gy(0.50 * target.volume_cc)
    if d50 <= 0.0:
        raise MetricError(f"ROI {target.roi_name!r}: D50% is 0 Gy, the homogeneity index is undefined")
    return float((d2 - d98) / d50)


def compute_isodose_volume_cc(dose: DoseGrid, dose_level_gy: float) -> float:
    """Volume (cc) of the dose grid with dose >= dose_level_gy (Gy): voxel count x voxel volume.

    Each voxel counts whole when its centre dose reaches the level (no sub-voxel interpolation);
    for a smoother estimate inside the patient use ``compute_roi_dvh(ss, "BODY", dose)`` and
    ``DVH.compute_volume_at_dose_cc(dose_level_gy)``.
    """
    if dose_level_gy <= 0.0:
        raise ValueError("dose_level_gy must be positive")
    count = int(np.count_nonzero(np.nan_to_num(dose.dose_gy, nan=0.0) >= dose_level_gy))
    return float(count * dose.grid.voxel_volume_cc)


@dataclass(frozen=True, slots=True)
class ConformityIndices:
    """Conformity of the prescription isodose to a target (volumes cc, dose Gy).

    target_volume_cc is the whole target (TV, including any part outside the dose grid, which
    counts as not covered); target_covered_cc is TV_PIV.
    """

    roi_name: str
    prescription_gy: float
    target_volume_cc: float
    isodose_volume_cc: float
    target_covered_cc: float

    @property
    def coverage(self) -> float:
        """TV_PIV / TV."""
        return self.target_covered_cc / self.target_volume_cc

    @property
    def selectivity(self) -> float:
        """TV_PIV / PIV (0 when the isodose volume is empty)."""
        return self.target_covered_cc / self.isodose_volume_cc if self.isodose_volume_cc > 0.0 else 0.0

    @property
    def paddick_ci(self) -> float:
        """TV_PIV^2 / (TV x PIV)."""
        return self.coverage * self.selectivity

    @property
    def rtog_ci(self) -> float:
        """PIV / TV."""
        return self.isodose_volume_cc / self.target_volume_cc

    def to_dict(self) -> dict[str, Any]:
        return {
            "roi_name": self.roi_name,
            "prescription_gy": self.prescription_gy,
            "target_volume_cc": self.target_volume_cc,
            "isodose_volume_cc": self.isodose_volume_cc,
            "target_covered_cc": self.target_covered_cc,
            "coverage": self.coverage,
            "selectivity": self.selectivity,
            "paddick_ci": self.paddick_ci,
            "rtog_ci": self.rtog_ci,
        }


def compute_conformity_indices(target: DVH, prescription_gy: float, isodose_volume_cc: float) -> ConformityIndices:
    """Paddick and RTOG conformity of a target DVH (Gy, cc) to a prescription isodose volume PIV (cc).

    ``isodose_volume_cc`` comes from :func:`compute_isodose_volume_cc` (whole dose grid) or from a
    BODY DVH's ``compute_volume_at_dose_cc(prescription_gy)``. It must contain the covered target:
    TV_PIV more than 5 % above PIV is an error; within that (sampling differences) TV_PIV is
    clipped to PIV.
    """
    if prescription_gy <= 0.0:
        raise MetricError("prescription_gy must be positive")
    if isodose_volume_cc < 0.0:
        raise ValueError("isodose_volume_cc must be >= 0")
    covered = target.compute_volume_at_dose_cc(prescription_gy)
    if covered > isodose_volume_cc * 1.05 + 1e-3:
        raise RTError(
            f"ROI {target.roi_name!r}: {covered:.4g} cc of target above {prescription_gy:g} Gy exceeds the "
            f"prescription isodose volume {isodose_volume_cc:.4g} cc"
        )
    return ConformityIndices(
        roi_name=target.roi_name,
        prescription_gy=float(prescription_gy),
        target_volume_cc=float(target.total_volume_cc),
        isodose_volume_cc=float(isodose_volume_cc),
        target_covered_cc=float(min(covered, isodose_volume_cc)),
    )


def compute_paddick_ci(target: DVH, prescription_gy: float, isodose_volume_cc: float) -> float:
    """Paddick CI = TV_PIV^2 / (TV x PIV) (see :func:`compute_conformity_indices`)."""
    return compute_conformity_indices(target, prescription_gy, isodose_volume_cc).paddick_ci


def compute_rtog_ci(target: DVH, isodose_volume_cc: float) -> float:
    """RTOG CI = PIV / TV (PIV cc, TV the target's total volume cc)."""
    return float(isodose_volume_cc / target.total_volume_cc)


def compute_geud_gy(dvh: DVH, a: float) -> float:
    """Generalised EUD (Gy): ``(sum_i v_i D_i^a / V)^(1/a)`` over the differential DVH.

    D_i is the centre of bin i clipped to [Min, Max] Gy, v_i its volume (cc), V the ROI volume
    with dose (cc). Evaluated as ``S (sum_i v_i (D_i/S)^a / V)^(1/a)`` with S = max D_i (a > 0) or
    min D_i (a < 0) so that large |a| does not overflow. a = 0 is undefined (MetricError). The
    lowest bin's centre is >= bin_width_gy / 2, so a < 0 stays finite for a DVH reaching 0 Gy.
    """
    if not np.isfinite(a) or a == 0.0:
        raise MetricError(f"gEUD parameter a must be finite and non-zero, not {a!r}")
    volumes = np.asarray(dvh.differential_volume_cc, dtype=np.float64)
    centres = np.clip(dvh.dose_edges_gy + dvh.bin_width_gy / 2.0, dvh.min_gy, dvh.max_gy)
    keep = volumes > 0.0
    v, d = volumes[keep], centres[keep]
    total = float(v.sum())
    if total <= 0.0:
        raise RTError(f"ROI {dvh.roi_name!r} has an empty DVH")
    # Normalise by Max (a > 0) or by the smallest D_i (a < 0) so that every ratio^a <= 1.
    scale = float(d.max() if a > 0.0 else d.min())
    if scale <= 0.0:
        return 0.0
    mean_power = float(np.dot(v, (d / scale) ** a) / total)
    return float(scale * mean_power ** (1.0 / a))
