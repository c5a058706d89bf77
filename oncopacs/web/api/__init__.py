"""The JSON REST API under ``/api`` (patients, studies with their oncology summary, series, jobs)."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")
