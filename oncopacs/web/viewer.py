"""``/slices/<StudyInstanceUID>/<plane>/<index>.png``: one rendered CT slice with contours and dose.

Query: ``window`` (lung, mediastinum, bone, brain), ``rois`` (comma-separated names; absent: all,
empty: none), ``isodose`` (comma-separated levels) with ``unit`` (gy or percent of the prescription),
``wash`` (1/0: dose colourwash), ``dose`` (an RT Dose SOP Instance UID; default the study's first).
Needs ARCHIVE_READ; every slice served is audited (RETRIEVE) with the patient and study.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, request

from oncopacs.audit.events import AuditAction, Outcome
from oncopacs.auth.roles import Permission
from oncopacs.errors import NotFoundError
from oncopacs.uids import is_valid_uid
from oncopacs.viewer.scene import LoadedScene, Viewer
from oncopacs.viewer.slices import RenderOptions, SliceError, isodose_levels_gy
from oncopacs.web.access import audit_access, requires

bp = Blueprint("viewer", __name__, url_prefix="/slices")

MAX_ISODOSE_LEVELS = 12


def viewer() -> Viewer:
    """The app's viewer (scenes and slice cache), created on first use."""
    found = current_app.extensions.get("oncopacs.viewer")
    if found is None:
        found = current_app.extensions.setdefault("oncopacs.viewer", Viewer(current_app.extensions["oncopacs.archive"]))
    return found


@bp.get("/<study_uid>/<any(axial, coronal, sagittal):plane>/<int:index>.png")
@requires(Permission.ARCHIVE_READ)
def slice_png(study_uid: str, plane: str, index: int):
    """The slice as PNG (square pixels; the ``X-Pixel-Spacing-mm`` header gives their size)."""
    dose_uid = request.args.get("dose", "").strip() or None
    for uid in (study_uid, dose_uid):
        if uid is not None and not is_valid_uid(uid):
            abort(400, description=f"{uid[:70]!r} is not a DICOM UID")
    loaded = load_or_404(study_uid, dose_uid)
    try:
        options = read_options(request.args, loaded)
        rendered = viewer().slices.render(loaded.scene, plane, index, options)
    except SliceError as exc:
        abort(400, description=str(exc))
    audit_access(AuditAction.RETRIEVE, patient_ids=[loaded.inputs.patient_id], study_uids=[study_uid])
    response = Response(rendered.png, mimetype="image/png")
    response.headers["X-Pixel-Spacing-mm"] = f"{rendered.pixel_mm:.4f}"
    response.headers["Cache-Control"] = "private, max-age=300"
    return response


def load_or_404(study_uid: str, dose_uid: str | None) -> LoadedScene:
    try:
        return viewer().scene(study_uid, dose_uid)
    except NotFoundError as exc:
        audit_access(AuditAction.RETRIEVE, study_uids=[study_uid], outcome=Outcome.MINOR_FAILURE)
        abort(404, description=str(exc))


def read_options(args, loaded: LoadedScene) -> RenderOptions:
    """RenderOptions from the query string (SliceError when malformed)."""
    rois_text = args.get("rois")
    rois = None if rois_text is None else tuple(r for r in (p.strip() for p in rois_text.split(",")) if r)
    try:
        values = tuple(float(v) for v in args.get("isodose", "").split(",") if v.strip())
    except ValueError:
        raise SliceError("isodose must be comma-separated numbers") from None
    if len(values) > MAX_ISODOSE_LEVELS:
        raise SliceError(f"at most {MAX_ISODOSE_LEVELS} isodose levels")
    levels = isodose_levels_gy(values, args.get("unit", "gy").strip().lower(), loaded.scene.prescription_gy)
    return RenderOptions(window=args.get("window", "mediastinum").strip().lower(), rois=rois, isodose_gy=levels,
                         colourwash=args.get("wash", "1").strip() not in ("0", "false", "no"))
