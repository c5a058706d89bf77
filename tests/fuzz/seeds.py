"""Seed files for the fuzzers: files this project did not write, and one of its own phantoms.

pydicom's bundled test files (looked up one by one with ``download=False``: ``get_testdata_files`` would
try to download the files that are not bundled), the planning-system files under ``../shared/data``
(RT Ion Plans and Structure Sets, under 600 kB), and a phantom CT slice.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.data import get_testdata_file

from tests.conftest import SHARED_DATA, require
from tests.factories import part10_bytes, small_ct_series

#: Explicit and implicit VR, big endian, deflated, RLE/JPEG/JPEG-LS/JPEG 2000, RT objects, SR, private and UN
#: sequences, files without File Meta or its group length, and files already truncated or with bad VRs.
PYDICOM_SEEDS = (
    "CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
    "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_truncated.dcm",
    "rtplan.dcm", "rtplan_truncated.dcm", "rtstruct.dcm", "rtdose.dcm", "rtdose_1frame.dcm",
    "rtdose_rle_1frame.dcm", "rtdose_expb_1frame.dcm", "image_dfl.dcm", "JPEG2000.dcm", "JPEG-lossy.dcm",
    "SC_rgb_rle.dcm", "SC_rgb_small_odd.dcm", "SC_rgb_rle_32bit_2frame.dcm", "SC_ybr_full_422_uncompressed.dcm",
    "SC_rgb_jpeg_dcmtk.dcm", "JPEGLSNearLossless_08.dcm", "test-SR.dcm", "reportsi.dcm",
    "reportsi_with_empty_number_tags.dcm", "nested_priv_SQ.dcm", "priv_SQ.dcm", "UN_sequence.dcm",
    "no_meta_group_length.dcm", "meta_missing_tsyntax.dcm", "ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm",
    "liver_1frame.dcm", "badVR.dcm", "empty_charset_LEI.dcm", "no_meta.dcm", "693_J2KI.dcm",
    "GDCMJ2K_TextGBR.dcm",
)
SHARED_SEED_MAX_BYTES = 600_000


def seed_files() -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of every seed, in a stable order."""
    seeds = []
    for name in PYDICOM_SEEDS:
        path = get_testdata_file(name, download=False)
        assert path is not None, f"pydicom no longer bundles {name}"
        seeds.append((f"pydicom:{name}", Path(str(path)).read_bytes()))
    require(SHARED_DATA.exists(), f"shared test data {SHARED_DATA} is absent")
    for path in sorted(SHARED_DATA.rglob("*.dcm")):
        if path.stat().st_size <= SHARED_SEED_MAX_BYTES:
            seeds.append((f"shared:{path.relative_to(SHARED_DATA)}", path.read_bytes()))
    seeds.append(("phantom:CT", part10_bytes(small_ct_series(1, prefix="FZ")[0])))
    return seeds
