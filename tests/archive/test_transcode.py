"""Transcoding for a receiver that takes only uncompressed data keeps the instance what it is."""

from __future__ import annotations

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from oncopacs.archive.transcode import fit_transfer_syntax
from tests.factories import small_ct_series


def test_a_decompressed_instance_keeps_its_sop_instance_uid_and_pixels():
    (dataset,) = small_ct_series(1)
    pixels = dataset.pixel_array.copy()
    dataset.compress(RLELossless)
    uid = str(dataset.SOPInstanceUID)
    sent = fit_transfer_syntax(dataset, {str(ExplicitVRLittleEndian)})
    assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert str(sent.SOPInstanceUID) == uid == str(sent.file_meta.MediaStorageSOPInstanceUID)  # pydicom 3 would renew it
    assert np.array_equal(sent.pixel_array, pixels)
