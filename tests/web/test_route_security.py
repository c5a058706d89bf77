"""Every route is locked (reliability S1) and the role matrix holds on every route (S2).

The tests walk ``app.url_map`` as it is when they run, so routes added later are covered without
editing this file: a new route must either declare its permission with ``@requires`` or be named
below on purpose.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from werkzeug.routing import Rule
from werkzeug.routing.converters import AnyConverter, FloatConverter, IntegerConverter, UUIDConverter

from oncopacs.auth.roles import PERMISSIONS, Permission, Role
from oncopacs.platform import open_platform
from oncopacs.web.access import is_public
from oncopacs.web.auth import MACHINE_PREFIXES
from oncopacs.web.ohif_viewer import RouteConverter

# The whole allowlist. OHIF's published build files and its no-op service-worker script hold no patient data, and the
# browser fetches some (the web-app manifest) without cookies; OHIF's pages and configuration stay signed-in.
PUBLIC_ENDPOINTS = frozenset({"auth.login", "static", "health.health", "ohif.build_file", "ohif.no_service_worker"})
# Open to any signed-in caller on purpose (no patient data): sign-out, who-am-I, the API description.
AUTHENTICATED_ONLY = frozenset({"auth.logout", "api.me", "api.openapi_document"})
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DUMMY_UID = "1.2.826.0.1.3680043.10.543.999.1"


def dummy_value(converter) -> object:
    if isinstance(converter, IntegerConverter):
        return 1
    if isinstance(converter, FloatConverter):
        return 1.0
    if isinstance(converter, UUIDConverter):
        return uuid.UUID(int=1)
    if isinstance(converter, AnyConverter):
        return min(converter.items)
    if isinstance(converter, RouteConverter):
        return "viewer"  # one of OHIF's routes (no dot)
    return DUMMY_UID  # string and path converters: StudyInstanceUID, user names, tag paths, file names


def dummy_url(rule: Rule) -> str:
    """The rule's URL with every variable filled with a dummy UID (or number)."""
    built = rule.build({name: dummy_value(converter) for name, converter in rule._converters.items()})
    assert built is not None, rule.rule
    return built[1]


def walk(app: Flask) -> Iterator[tuple[Rule, str]]:
    """Every (rule, method) pair the app answers, HEAD and OPTIONS aside."""
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def required_permission(app: Flask, rule: Rule) -> Permission | None:
    return getattr(app.view_functions[rule.endpoint], "required_permission", None)


def unguarded_endpoints(app: Flask) -> set[str]:
    """Endpoints that are neither public, nor deliberately open to anyone signed in, nor guarded by a permission."""
    return {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if not is_public(app.view_functions[rule.endpoint])
        and rule.endpoint not in AUTHENTICATED_ONLY
        and required_permission(app, rule) is None
    }


def test_the_public_allowlist_is_exactly_login_static_health_and_ohif_build_files(sqlite_web_app: Flask):
    public = {rule.endpoint for rule in sqlite_web_app.url_map.iter_rules()
              if is_public(sqlite_web_app.view_functions[rule.endpoint])}
    assert public == PUBLIC_ENDPOINTS


def test_every_route_and_method_refuses_unauthenticated_requests(sqlite_web_app: Flask):
    client = sqlite_web_app.test_client()
    checked, wrong = 0, []
    for rule in sqlite_web_app.url_map.iter_rules():
        url = dummy_url(rule)
        for method in METHODS:
            if rule.endpoint in PUBLIC_ENDPOINTS and method in rule.methods:
                continue  # reachable on purpose; a method it does not allow is still refused with 401
            reply = client.open(url, method=method)
            checked += 1
            if reply.status_code != 401:
                wrong.append(f"{method} {url} -> {reply.status_code}")
            elif url.startswith(MACHINE_PREFIXES) and "Basic" not in reply.headers.get("WWW-Authenticate", ""):
                wrong.append(f"{method} {url} -> 401 without a Basic challenge")
            elif reply.is_json and reply.get_json().get("status") != 401:
                wrong.append(f"{method} {url} -> 401 without the JSON error body")
    assert checked >= len(METHODS) * 4
    assert wrong == []


def test_ui_pages_redirect_to_login_and_machine_routes_answer_401(sqlite_web_app: Flask):
    client = sqlite_web_app.test_client()
    wrong = []
    for rule, method in walk(sqlite_web_app):
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        url = dummy_url(rule)
        reply = client.open(url, method=method, headers={"Accept": "text/html"})
        if url.startswith(MACHINE_PREFIXES):
            ok = reply.status_code == 401
        else:
            ok = reply.status_code == 302 and reply.headers["Location"].startswith("/login?next=")
        if not ok:
            wrong.append(f"{method} {url} -> {reply.status_code}")
    assert wrong == []


def test_unknown_or_revoked_credentials_are_refused_on_every_protected_route(
    sqlite_web_app: Flask, sqlite_headers_for: Callable[[Role], dict[str, str]]
):
    store = sqlite_web_app.extensions["oncopacs.users"]
    headers = sqlite_headers_for(Role.ADMIN)
    store.revoke_token(store.list_tokens("test-admin")[0].id)
    client = sqlite_web_app.test_client()
    wrong = []
    for rule, method in walk(sqlite_web_app):
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        for credentials in (headers, {"Authorization": "Bearer opx_not-a-token"}):
            reply = client.open(dummy_url(rule), method=method, headers=credentials)
            if reply.status_code != 401:
                wrong.append(f"{method} {rule.rule} -> {reply.status_code}")
    assert wrong == []


def test_every_protected_route_declares_its_permission(sqlite_web_app: Flask):
    assert unguarded_endpoints(sqlite_web_app) == set()
    assert set(sqlite_web_app.view_functions) >= AUTHENTICATED_ONLY


def test_a_new_route_without_a_permission_is_flagged(sqlite_settings):
    from oncopacs.web.app import create_app

    app = create_app(open_platform(sqlite_settings.with_overrides(secret_key="test-secret")))
    app.add_url_rule("/api/forgotten", "forgotten", lambda: "patient data")
    try:
        assert unguarded_endpoints(app) == {"forgotten"}
        assert app.test_client().get("/api/forgotten").status_code == 401  # locked, but open to every role
    finally:
        app.extensions["oncopacs.archive"].close()


@pytest.mark.parametrize("role", list(Role))
def test_role_matrix_on_every_guarded_route(
    role: Role, sqlite_web_app: Flask, sqlite_headers_for: Callable[[Role], dict[str, str]]
):
    """403 exactly where the role lacks the route's permission (PERMISSIONS is the table)."""
    client = sqlite_web_app.test_client()
    headers = sqlite_headers_for(role)
    allowed = PERMISSIONS[role]
    checked, wrong = 0, []
    for rule, method in walk(sqlite_web_app):
        permission = required_permission(sqlite_web_app, rule)
        if permission is None:
            continue
        reply = client.open(dummy_url(rule), method=method, headers=headers)
        checked += 1
        if permission in allowed and reply.status_code in (401, 403):
            wrong.append(f"{method} {rule.rule} ({permission.value}) refused: {reply.status_code}")
        if permission not in allowed and reply.status_code != 403:
            wrong.append(f"{method} {rule.rule} ({permission.value}) not refused: {reply.status_code}")
    assert checked > 0
    assert wrong == []


@pytest.mark.parametrize("role", list(Role))
def test_every_role_reaches_the_authenticated_only_routes(
    role: Role, sqlite_web_app: Flask, sqlite_headers_for: Callable[[Role], dict[str, str]]
):
    client = sqlite_web_app.test_client()
    me = client.get("/api/me", headers=sqlite_headers_for(role))
    assert me.status_code == 200
    assert set(me.get_json()["permissions"]) == {p.value for p in PERMISSIONS[role]}
    assert client.post("/logout", headers=sqlite_headers_for(role)).status_code == 204  # a token has no session


def _route_exists(app: Flask, path: str, method: str) -> bool:
    try:
        app.url_map.bind("localhost").match(path, method=method)
        return True
    except Exception:  # noqa: BLE001 - NotFound or MethodNotAllowed
        return False


def test_explicit_expectations(sqlite_web_app: Flask, sqlite_headers_for: Callable[[Role], dict[str, str]]):
    """The matrix in words: a referrer cannot browse the archive; only an administrator manages users."""
    client = sqlite_web_app.test_client()
    for role in Role:
        reply = client.get("/api/users", headers=sqlite_headers_for(role))
        assert reply.status_code == (200 if role is Role.ADMIN else 403), role
        created = client.post("/api/users", json={"username": f"new-{role.value}", "role": "referrer",
                                                  "password": "long enough password"}, headers=sqlite_headers_for(role))
        assert created.status_code == (201 if role is Role.ADMIN else 403), role
    if not _route_exists(sqlite_web_app, "/dicom-web/studies", "GET"):
        pytest.skip("QIDO-RS /dicom-web/studies is not registered yet")
    assert client.get("/dicom-web/studies", headers=sqlite_headers_for(Role.REFERRER)).status_code == 403
    assert client.get("/dicom-web/studies", headers=sqlite_headers_for(Role.TUMOUR_BOARD)).status_code == 200
    assert client.get("/dicom-web/studies", headers=sqlite_headers_for(Role.PHYSICIST)).status_code == 200
