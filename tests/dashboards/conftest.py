"""Dashboard fixtures: one app per package over an archive with the demo patients loaded (about 10 s)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from flask import Flask, g

from oncopacs.auth.roles import Principal, Role
from oncopacs.cli.demo import analyse_demo, load_demo
from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app


@pytest.fixture(scope="package")
def demo_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """The full app (dashboards mounted) over a SQLite archive holding the demo and PET follow-up patients."""
    folder = tmp_path_factory.mktemp("dash-demo")
    settings = Settings(data_dir=folder / "data", dicom_host="127.0.0.1", dicom_port=0, secret_key="test-secret")
    with open_platform(settings) as platform:  # as `oncopacs demo` runs it: rules first, then the data
        load_demo(platform.archive)
        analyse_demo(platform)
        app = create_app(platform)
        app.config["TESTING"] = True
        yield app


@pytest.fixture
def as_role(demo_app: Flask) -> Callable:
    """``with as_role(Role.X):`` runs callback functions in a request of a caller with that role."""

    @contextmanager
    def context(role: Role):
        with demo_app.test_request_context("/dashboards/_dash-update-component", method="POST"):
            g.principal = Principal(f"test-{role.value}", role, "token")
            yield

    return context


def as_json(component) -> str:
    """A Dash component tree as the JSON the browser receives."""
    return json.dumps(component, cls=__import__("plotly").utils.PlotlyJSONEncoder)


def texts(component) -> list[str]:
    """Every string child in a component tree, in order."""
    found: list[str] = []

    def walk(node):
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)
        elif hasattr(node, "children"):
            walk(getattr(node, "children", None))

    walk(component)
    return found


def dash_update(client, base: str, outputs: list[tuple[str, str]], inputs: list[tuple[str, str, object]],
                headers: dict[str, str], state: list[tuple[str, str, object]] = (), changed: list[str] | None = None):
    """POST a callback request to the Dash app at ``base`` the way the browser does; the response.

    ``changed``: the ``id.property`` of the inputs that changed (default: all of them)."""
    body = {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + ".." if len(outputs) > 1
        else f"{outputs[0][0]}.{outputs[0][1]}",
        "outputs": [{"id": i, "property": p} for i, p in outputs] if len(outputs) > 1
        else {"id": outputs[0][0], "property": outputs[0][1]},
        "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
        "changedPropIds": changed if changed is not None else [f"{i}.{p}" for i, p, _ in inputs],
        "state": [{"id": i, "property": p, "value": v} for i, p, v in state],
    }
    return client.post(f"{base}_dash-update-component", json=body, headers=headers)


@pytest.fixture(scope="package")
def bearer(demo_app: Flask) -> Callable[[Role], dict[str, str]]:
    """Bearer headers of a user with the role (created on first use)."""
    made: dict[Role, dict[str, str]] = {}

    def headers(role: Role) -> dict[str, str]:
        if role not in made:
            users = demo_app.extensions["oncopacs.users"]
            users.add_user(f"dash-{role.value}", role, "correct horse battery")
            made[role] = {"Authorization": f"Bearer {users.create_token(f'dash-{role.value}')}"}
        return made[role]

    return headers


def study_uids(app: Flask, patient_id: str) -> dict[str, str]:
    """StudyDescription -> StudyInstanceUID of a patient."""
    from sqlalchemy import select

    from oncopacs.index.models import Patient, Study

    with app.extensions["oncopacs.archive"].index.reading() as session:
        rows = session.execute(select(Study.study_description, Study.study_instance_uid).join(Patient)
                               .where(Patient.patient_id == patient_id)).all()
    return dict(rows)


def with_class(component, prefix: str) -> list:
    """The children of every component whose className starts with ``prefix``."""
    found: list = []

    def walk(node):
        if isinstance(node, list | tuple):
            for item in node:
                walk(item)
        elif hasattr(node, "children"):
            if str(getattr(node, "className", "") or "").startswith(prefix):
                found.append(node.children)
            walk(getattr(node, "children", None))

    walk(component)
    return found
