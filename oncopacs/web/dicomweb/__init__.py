"""DICOMweb (PS3.18) under ``/dicom-web``: QIDO-RS, WADO-RS and STOW-RS over the one ingest and index."""

from flask import Blueprint

bp = Blueprint("dicomweb", __name__, url_prefix="/dicom-web")

from oncopacs.web.dicomweb import metadata, qido, stow, wado  # noqa: E402,F401  (register their routes on bp)
