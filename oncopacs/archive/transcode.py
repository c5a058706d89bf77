"""Fitting a stored instance to the transfer syntaxes a receiver accepted.

Instances are stored and, whenever the receiver accepts it, sent in the syntax they arrived in.
Only when it does not (a C-GET requestor that takes only uncompressed data, say) is the pixel
data decompressed to explicit VR little endian, as Orthanc and dcm4chee do.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from oncopacs.errors import OncopacsError

_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


class TranscodeError(OncopacsError):
    """The receiver accepts no syntax the instance can be sent in."""


def fit_transfer_syntax(dataset: Dataset, accepted: set[str]) -> Dataset:
    """``dataset`` as stored when ``accepted`` allows it, else decompressed to explicit VR LE."""
    stored = UID(str(dataset.file_meta.TransferSyntaxUID))
    if stored in accepted or (stored in _UNCOMPRESSED and accepted & _UNCOMPRESSED):
        return dataset
    if not stored.is_compressed or not accepted & _UNCOMPRESSED:
        raise TranscodeError(f"the receiver accepts none of {stored.name} or uncompressed little endian")
    try:
        dataset.decompress(generate_instance_uid=False)  # the same instance, decoded: never a new SOP Instance UID
    except Exception as exc:  # noqa: BLE001 - decoders raise many kinds of error
        raise TranscodeError(f"cannot decompress {stored.name}: {type(exc).__name__}") from None
    return dataset
