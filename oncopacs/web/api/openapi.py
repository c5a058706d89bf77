"""``/api/openapi.json``: an OpenAPI 3.1 document built from the app's routes, so it stays true.

Every rule under ``/api`` and ``/dicom-web`` becomes an operation: its path parameters (typed by
their converters), its summary (the view's docstring), the permission it requires (the
``required_permission`` attribute set by :func:`oncopacs.web.access.requires`, also given as
``x-required-permission``) and its security (HTTP Basic or a bearer token unless the view is public).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from flask import Flask, current_app, jsonify

from oncopacs import __version__
from oncopacs.web.access import is_public
from oncopacs.web.api import bp

DOCUMENTED_PREFIXES = ("/api", "/dicom-web")
OPENAPI_VERSION = "3.1.0"

_RULE_PARAMETER = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_CONVERTER_SCHEMAS: dict[str, dict[str, str]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "uuid": {"type": "string", "format": "uuid"},
}
_SECURITY: list[dict[str, list[str]]] = [{"basicAuth": []}, {"bearerAuth": []}]
_ERROR = {"$ref": "#/components/schemas/Error"}


@bp.get("/openapi.json")
def openapi_document():
    """This OpenAPI 3.1 document: every /api and /dicom-web route, its parameters and the permission it needs."""
    return jsonify(build_openapi(current_app))


def build_openapi(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes under ``/api`` and ``/dicom-web``."""
    paths: dict[str, dict[str, Any]] = {}
    rules = sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint))
    for rule in rules:
        if not rule.rule.startswith(DOCUMENTED_PREFIXES):
            continue
        view = app.view_functions[rule.endpoint]
        path, parameters = _path_and_parameters(rule.rule)
        item = paths.setdefault(path, {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            item.setdefault(method.lower(), _operation(rule.endpoint, method, view, parameters))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "OncoPACS",
            "version": __version__,
            "description": "The JSON REST API (/api) and DICOMweb (/dicom-web) of OncoPACS. Every operation "
                           "needs HTTP Basic or a bearer token; x-required-permission names the permission "
                           "the caller's role must hold.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic"},
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API token of a user"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "detail": {"type": "string"},
                                   "status": {"type": "integer"}},
                    "required": ["error", "detail", "status"],
                },
            },
        },
        "security": _SECURITY,
    }


def _path_and_parameters(rule: str) -> tuple[str, list[dict[str, Any]]]:
    parameters = []
    for match in _RULE_PARAMETER.finditer(rule):
        converter = match.group("converter") or "default"
        schema = dict(_CONVERTER_SCHEMAS.get(converter, {"type": "string"}))
        parameter = {"name": match.group("name"), "in": "path", "required": True, "schema": schema}
        if converter == "path":
            parameter["description"] = "may contain slashes"
        parameters.append(parameter)
    return _RULE_PARAMETER.sub(lambda m: "{" + m.group("name") + "}", rule), parameters


def _operation(endpoint: str, method: str, view, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    summary, _, description = (inspect.getdoc(view) or endpoint).partition("\n")
    permission = getattr(view, "required_permission", None)
    public = is_public(view)
    module = getattr(view, "__module__", "") or ""
    operation: dict[str, Any] = {
        "operationId": f"{endpoint}.{method.lower()}",
        "summary": summary.strip(),
        "tags": [module.rsplit(".", 1)[-1] if module.startswith("oncopacs.web.") else endpoint.split(".")[0]],
        "parameters": parameters,
        "security": [] if public else _SECURITY,
        "responses": _responses(permission is not None, public),
    }
    if description.strip():
        operation["description"] = description.strip()
    if permission is not None:
        operation["x-required-permission"] = permission.value
    return operation


def _responses(has_permission: bool, public: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "2XX": {"description": "success"},
        "400": {"description": "the request is malformed", "content": {"application/json": {"schema": _ERROR}}},
    }
    if not public:
        responses["401"] = {"description": "authentication required",
                            "content": {"application/json": {"schema": _ERROR}}}
    if has_permission:
        responses["403"] = {"description": "the caller's role lacks the required permission",
                            "content": {"application/json": {"schema": _ERROR}}}
    return responses
