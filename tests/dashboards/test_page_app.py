"""Each dashboard page loads the component libraries it uses, not every library the server imported."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask

from oncopacs.auth.roles import Role

PAGES = {"/dashboards/plan/1.2.3": False, "/dashboards/board/": True, "/dashboards/pet/1.2.3": False,
         "/dashboards/review/1.2.3": False, "/dashboards/response/P1": False}


def _scripts(demo_app: Flask, bearer: Callable[[Role], dict[str, str]], path: str) -> list[str]:
    reply = demo_app.test_client().get(path, headers=bearer(Role.PHYSICIST))
    assert reply.status_code == 200
    return re.findall(r'<script src="([^"]+)"', reply.get_data(as_text=True))


@pytest.mark.parametrize(("path", "grid"), PAGES.items())
def test_a_page_loads_ag_grid_only_where_it_shows_a_grid(demo_app, bearer, path: str, grid: bool):
    scripts = _scripts(demo_app, bearer, path)
    assert any("dash_mantine_components" in s for s in scripts)  # the shell's library, on every page
    assert any("dash_renderer" in s for s in scripts) and any("dash_core_components" in s for s in scripts)
    assert any("dash_ag_grid" in s for s in scripts) == grid


def test_every_script_a_page_names_is_served(demo_app, bearer):
    client = demo_app.test_client()
    for path in PAGES:
        for src in _scripts(demo_app, bearer, path):
            assert client.get(src, headers=bearer(Role.PHYSICIST)).status_code == 200, src


def test_the_pet_page_starts_loading_plotly_with_its_first_layout(demo_app, bearer):
    layout = demo_app.test_client().get("/dashboards/pet/_dash-layout", headers=bearer(Role.PHYSICIST))
    assert layout.status_code == 200 and '"plotly-early"' in layout.get_data(as_text=True)
