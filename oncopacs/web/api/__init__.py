"""The JSON REST API under ``/api`` (patients, studies with their oncology summary, series, jobs, users, audit)."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")

from oncopacs.web.api import (  # noqa: E402,F401
    audit,
    hl7,
    jobs,
    merges,
    models,
    openapi,
    orchestration,
    outbox,
    patients,
    peers,
    reports,
    rt,
    series,
    studies,
    users,
)
