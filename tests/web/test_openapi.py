"""/api/openapi.json: a valid OpenAPI 3.1 document that lists every /api and /dicom-web route."""

from __future__ import annotations

import json
import re

from flask import Flask
from openapi_spec_validator import validate

from oncopacs.auth.roles import Permission, Role
from oncopacs.web.access import is_public, requires
from oncopacs.web.api.openapi import build_openapi


def _document(app: Flask, headers: dict[str, str]) -> dict:
    reply = app.test_client().get("/api/openapi.json", headers=headers)
    assert reply.status_code == 200 and reply.mimetype == "application/json"
    return json.loads(reply.data)


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule)


def test_any_signed_in_role_may_read_it_but_not_anonymous(sqlite_web_app: Flask, sqlite_headers_for):
    client = sqlite_web_app.test_client()
    assert client.get("/api/openapi.json").status_code == 401
    for role in Role:
        assert client.get("/api/openapi.json", headers=sqlite_headers_for(role)).status_code == 200
    view = sqlite_web_app.view_functions["api.openapi_document"]
    assert not is_public(view) and getattr(view, "required_permission", None) is None


def test_document_is_valid_openapi_31(sqlite_web_app: Flask, sqlite_headers_for):
    document = _document(sqlite_web_app, sqlite_headers_for(Role.REFERRER))
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"] == {
        "basicAuth": {"type": "http", "scheme": "basic"},
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API token of a user"},
    }


def test_every_api_and_dicomweb_rule_is_listed(sqlite_web_app: Flask, sqlite_headers_for):
    document = _document(sqlite_web_app, sqlite_headers_for(Role.ADMIN))
    rules = [r for r in sqlite_web_app.url_map.iter_rules() if r.rule.startswith(("/api", "/dicom-web"))]
    assert any(r.rule.startswith("/dicom-web") for r in rules) and any(r.rule == "/api/jobs" for r in rules)
    for rule in rules:
        item = document["paths"][_openapi_path(rule.rule)]
        view = sqlite_web_app.view_functions[rule.endpoint]
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = item[method.lower()]
            permission = getattr(view, "required_permission", None)
            assert operation.get("x-required-permission") == (permission.value if permission else None), rule.rule
            assert operation["summary"], rule.endpoint
            assert operation["security"] == ([] if is_public(view) else [{"basicAuth": []}, {"bearerAuth": []}])
            assert ("403" in operation["responses"]) == (permission is not None)
            assert {p["name"] for p in operation["parameters"]} == set(rule.arguments)
    listed = {(path, method) for path, item in document["paths"].items() for method in item}
    expected = {(_openapi_path(r.rule), m.lower()) for r in rules for m in r.methods - {"HEAD", "OPTIONS"}}
    assert listed == expected
    assert not any(path.startswith(("/health", "/login", "/static")) for path in document["paths"])


def test_operations_carry_permissions_parameters_and_summaries(sqlite_web_app: Flask, sqlite_headers_for):
    paths = _document(sqlite_web_app, sqlite_headers_for(Role.ONCOLOGIST))["paths"]
    assert paths["/api/jobs"]["post"]["x-required-permission"] == Permission.ANALYSIS_RUN.value
    assert paths["/api/jobs"]["get"]["x-required-permission"] == Permission.ARCHIVE_READ.value
    assert paths["/api/peers/{aet}/echo"]["post"]["x-required-permission"] == Permission.PEERS_MANAGE.value
    assert paths["/api/jobs/{job_id}"]["get"]["parameters"] == [
        {"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    ]
    assert paths["/api/patients/{patient_id}"]["get"]["parameters"][0]["schema"] == {"type": "string"}
    assert paths["/api/studies/{study_uid}"]["get"]["summary"].startswith("One study")
    assert "x-required-permission" not in paths["/api/openapi.json"]["get"]
    operation_ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_a_route_added_later_appears_with_its_permission(sqlite_web_app: Flask):
    @requires(Permission.AUDIT_READ)
    def count_things(n: int):
        """Count things up to n.

        A longer description.
        """
        return {"n": n}

    sqlite_web_app.add_url_rule("/api/things/<int:n>/count", view_func=count_things, methods=["GET", "DELETE"])
    document = build_openapi(sqlite_web_app)
    validate(document)
    item = document["paths"]["/api/things/{n}/count"]
    assert set(item) == {"get", "delete"}
    assert item["get"]["x-required-permission"] == "audit.read"
    assert item["get"]["summary"] == "Count things up to n."
    assert item["get"]["description"] == "A longer description."
    assert item["get"]["parameters"][0]["schema"] == {"type": "integer"}
