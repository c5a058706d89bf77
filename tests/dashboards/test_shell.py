"""The application shell around every dashboard: header (user, role, sign-out), patient bar, navigation."""

from __future__ import annotations

import json
import re
from datetime import date

import pytest
from sqlalchemy import select

from dashboards.shell import Subject, patient_bar, shell_context, subject_of
from oncopacs.audit.models import AuditRecord
from oncopacs.auth.roles import Role
from oncopacs.web.navigation import PatientContext
from tests.dashboards.conftest import as_json, dash_update, study_uids, texts

PASSWORD = "correct horse battery"
DAY = date(2024, 6, 1)
PAGES = ("plan", "pet", "review", "response", "board")

OHIF = "Images in OHIF"


def components(layout: dict) -> dict[str, dict]:
    """Every component of a Dash layout (JSON) by id: {id: {"type": ..., "props": ...}}."""
    found: dict[str, dict] = {}

    def walk(node):
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict) and "props" in node:
            if isinstance(node["props"].get("id"), str):
                found[node["props"]["id"]] = node
            for value in node["props"].values():
                walk(value)

    walk(layout)
    return found


def links(tree) -> list[tuple[str, str, bool]]:
    """(label, href, active) of every link in a component tree, in order."""
    found: list[tuple[str, str, bool]] = []

    def walk(node):
        if isinstance(node, list | tuple):
            for item in node:
                walk(item)
        elif hasattr(node, "to_plotly_json"):
            href = getattr(node, "href", None)
            if href:
                found.append((str(getattr(node, "label", "") or getattr(node, "children", "")), href,
                              getattr(node, "active", False) is True))
            walk(getattr(node, "children", None))

    walk(tree)
    return found


def studies(tree) -> dict[str, list[str]]:
    """Study NavLink label (date) -> the labels of the page links beneath it."""
    found: dict[str, list[str]] = {}

    def walk(node):
        if isinstance(node, list | tuple):
            for item in node:
                walk(item)
        elif hasattr(node, "to_plotly_json"):
            if "op-nav-study" in str(getattr(node, "className", "") or ""):
                found[f"{node.label} {node.description}"] = [label for label, _, _ in links(node.children or [])]
            else:
                walk(getattr(node, "children", None))

    walk(tree)
    return found


def signed_in(app, name: str, role: Role):
    """A test client with a browser session of a new user ``name``."""
    app.extensions["oncopacs.users"].add_user(name, role, PASSWORD)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    reply = client.post("/login", data={"csrf_token": token, "username": name, "password": PASSWORD})
    assert reply.status_code == 303
    return client


def test_the_header_shows_the_user_and_role_and_signs_out_with_the_csrf_token(demo_app):
    client = signed_in(demo_app, "shell-physicist", Role.PHYSICIST)
    layout = client.get("/dashboards/plan/_dash-layout")
    assert layout.status_code == 200
    found = components(layout.get_json())
    assert found["shell-user"]["props"]["children"] == "shell-physicist"
    assert found["shell-role"]["props"]["children"] == "Physicist"
    assert found["shell-title"]["props"]["children"] == "Plan review"
    assert found["shell-home"]["props"]["href"] == "/"
    form = found["shell-sign-out"]["props"]
    assert (form["method"], form["action"]) == ("post", "/logout")
    hidden = next(c["props"] for c in form["children"] if c["props"].get("name") == "csrf_token")
    assert hidden["type"] == "hidden" and hidden["value"]
    assert client.post("/logout", data={}).status_code == 400  # the form's token is what makes it work
    out = client.post("/logout", data={"csrf_token": hidden["value"]})
    assert out.status_code == 303 and out.headers["Location"] == "/login"
    after = client.get("/dashboards/plan/_dash-layout", headers={"Accept": "text/html"})
    assert after.status_code == 302 and after.headers["Location"].startswith("/login?next=")


def test_a_token_caller_sees_name_and_role_but_no_sign_out(demo_app, bearer):
    found = components(demo_app.test_client().get("/dashboards/board/_dash-layout",
                                                  headers=bearer(Role.TUMOUR_BOARD)).get_json())
    assert found["shell-user"]["props"]["children"] == "dash-tumour_board"
    assert found["shell-role"]["props"]["children"] == "Tumour board"
    assert "shell-sign-out" not in found


def output_ids(dependency: dict) -> set[str]:
    """The component ids a callback (as ``_dash-dependencies`` lists it) writes to (pattern-matching ids aside)."""
    outputs = dependency["output"].strip(".").split("...") if dependency["output"].startswith("..") \
        else [dependency["output"]]
    return {o.rsplit(".", 1)[0] for o in outputs if not o.startswith("{")}


@pytest.mark.parametrize("page", PAGES)
def test_every_dashboard_is_inside_the_shell_with_its_own_ids(demo_app, bearer, page):
    client, headers = demo_app.test_client(), bearer(Role.ONCOLOGIST)
    layout = client.get(f"/dashboards/{page}/_dash-layout", headers=headers).get_json()
    assert layout["type"] == "MantineProvider" and layout["namespace"] == "dash_mantine_components"
    found = components(layout)
    assert {"shell-title", "shell-user", "shell-nav", "shell-content", "url"} <= set(found)
    # what the page draws when it opens (every callback on its URL) writes into components the layout still has
    dependencies = client.get(f"/dashboards/{page}/_dash-dependencies", headers=headers).get_json()
    on_open = [d for d in dependencies if any(i["id"] in ("url", "shell-url") for i in d["inputs"])]
    assert on_open and all(output_ids(d) <= set(found) for d in on_open), [output_ids(d) - set(found)
                                                                          for d in on_open]
    assert ("shell-patient" in found) is (page != "board")  # the board is about no one patient
    index = demo_app.test_client().get(f"/dashboards/{page}/", headers=bearer(Role.ONCOLOGIST)).get_data(as_text=True)
    assert 'href="/static/oncopacs.css"' in index


def test_the_patient_bar_is_formatted_for_people(demo_app, as_role):
    planning = study_uids(demo_app, "ONCO-DEMO-001")["Proton therapy planning"]
    with as_role(Role.ONCOLOGIST):
        bar, _ = shell_context(f"/dashboards/plan/{planning}", base="/dashboards/plan/", subject=Subject.STUDY,
                               today=DAY)
    assert texts(bar) == ["PHANTOM, Proton", "ID", "ONCO-DEMO-001", "Born", "12 Mar 1958 (66 y)", "Sex", "Male"]
    with as_role(Role.ONCOLOGIST):
        bar, _ = shell_context("/dashboards/response/ONCO-RESP-001", base="/dashboards/response/",
                               subject=Subject.PATIENT, today=DAY)
    assert texts(bar)[0] == "PHANTOM, Responder" and "ONCO-RESP-001" in texts(bar)


def test_navigation_offers_only_the_pages_that_apply(demo_app, as_role):
    response_uids = study_uids(demo_app, "ONCO-RESP-001")
    with as_role(Role.ONCOLOGIST):
        _, nav = shell_context(f"/dashboards/pet/{response_uids['FDG PET-CT baseline']}", base="/dashboards/pet/",
                               subject=Subject.STUDY, today=DAY)
    # FDG PET-CT with a bare RTSTRUCT (no plan, no dose): PET-CT only, newest first
    fdg = {k: v for k, v in studies(nav).items() if "FDG" in k}
    assert list(fdg.items()) == [("6 May 2024 FDG PET-CT follow-up", ["PET-CT", OHIF]),
                                 ("18 Mar 2024 FDG PET-CT mid-treatment", ["PET-CT", OHIF]),
                                 ("5 Feb 2024 FDG PET-CT baseline", ["PET-CT", OHIF])]
    every = links(nav)
    assert ("Treatment response", "/dashboards/response/ONCO-RESP-001", False) in every
    assert ("Study browser", "/", False) in every and ("Tumour board", "/dashboards/board/", False) in every
    assert [href for _, href, active in every if active] == [f"/dashboards/pet/{response_uids['FDG PET-CT baseline']}"]

    demo = study_uids(demo_app, "ONCO-DEMO-001")
    with as_role(Role.ONCOLOGIST):
        _, nav = shell_context("/dashboards/response/ONCO-DEMO-001", base="/dashboards/response/",
                               subject=Subject.PATIENT, today=DAY)
    assert studies(nav)["22 Jan 2024 FDG PET-CT staging"] == ["PET-CT", OHIF]
    assert studies(nav)["15 Jan 2024 Proton therapy planning"] == ["Plan review", OHIF]
    assert (OHIF, f"/viewer?StudyInstanceUIDs={demo['Proton therapy planning']}", False) in links(nav)
    assert (("Plan review", f"/dashboards/plan/{demo['Proton therapy planning']}", False) in links(nav))
    assert [label for label, _, active in links(nav) if active] == ["Treatment response"]

    four_d = study_uids(demo_app, "ONCO-4D-001")
    with as_role(Role.ONCOLOGIST):
        _, nav = shell_context(f"/dashboards/review/{four_d['Synthetic 4D CT']}", base="/dashboards/review/",
                               subject=Subject.STUDY, today=DAY)
    assert studies(nav)["5 Feb 2024 Repeat CT · no dashboard applies"] == [OHIF]  # its images still open
    assert studies(nav)["15 Jan 2024 Synthetic 4D CT"] == ["4D / registration review", OHIF]


def test_an_unknown_or_malformed_subject_shows_no_patient(demo_app, as_role):
    with as_role(Role.ONCOLOGIST):
        unknown, nav = shell_context("/dashboards/plan/1.2.3.999", base="/dashboards/plan/", subject=Subject.STUDY)
        malformed, _ = shell_context("/dashboards/plan/not-a-uid", base="/dashboards/plan/", subject=Subject.STUDY)
        nobody, _ = shell_context("/dashboards/response/", base="/dashboards/response/", subject=Subject.PATIENT)
    assert texts(unknown) == ["No study in the archive at this address."]
    assert texts(malformed) == ["No study chosen."] and texts(nobody) == ["No patient chosen."]
    assert [label for label, _, _ in links(nav)] == ["Study browser", "Tumour board"]


def test_subject_of_decodes_the_address():
    assert subject_of("/dashboards/response/ONCO%201%2F2", base="/dashboards/response/",
                      subject=Subject.PATIENT) == "ONCO 1/2"
    assert subject_of("/dashboards/plan/1.2.3/", base="/dashboards/plan/", subject=Subject.STUDY) == "1.2.3"
    assert subject_of("/dashboards/pet/1.2.3", base="/dashboards/plan/", subject=Subject.STUDY) == ""
    assert subject_of("/dashboards/board/", base="/dashboards/board/", subject=Subject.NONE) == ""


def test_the_shell_callback_over_http_is_audited(demo_app, bearer):
    planning = study_uids(demo_app, "ONCO-DEMO-002")["Proton therapy planning"]
    reply = dash_update(demo_app.test_client(), "/dashboards/plan/",
                        [("shell-patient", "children"), ("shell-nav", "children")],
                        [("shell-url", "pathname", f"/dashboards/plan/{planning}")], bearer(Role.ONCOLOGIST))
    assert reply.status_code == 200
    body = json.dumps(reply.get_json())
    assert "PHANTOM, Neutron" in body and "Female" in body and f"/dashboards/plan/{planning}" in body
    with demo_app.extensions["oncopacs.archive"].index.reading() as session:
        records = list(session.scalars(select(AuditRecord).where(
            AuditRecord.action == "query", AuditRecord.detail == "POST /dashboards/plan/_dash-update-component")))
    assert any("ONCO-DEMO-002" in str(r.patient_ids) and planning in str(r.study_uids) for r in records)


def test_a_name_holding_markup_stays_text():
    context = PatientContext("X-1", "<script>alert(1)</script>^Mallory", "", "", (), ())
    bar = patient_bar(context, today=DAY)
    assert texts(bar) == ["<SCRIPT>ALERT(1)</SCRIPT>, Mallory", "ID", "X-1", "Born", "unknown", "Sex", "unknown"]
    assert "dangerouslySetInnerHTML" not in as_json(bar)  # string children: React renders them as text
