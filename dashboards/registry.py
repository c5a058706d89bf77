"""The Dash applications mounted on the OncoPACS server: (url_base_pathname, factory) pairs.

``factory(server)`` builds a ``dash.Dash`` on the Flask ``server`` with exactly that
``url_base_pathname`` (which must start with ``/dashboards/`` and end with ``/``). Register
callbacks with ``app.callback`` (never the global ``dash.callback``: several apps share the server).
:func:`oncopacs.web.dashboards.mount_dashboards` creates them and puts every route under
``/dashboards/`` behind the DASHBOARDS_VIEW permission; callbacks that show patient data call
``oncopacs.web.access.audit_access`` themselves. Append new dashboards at the end.
"""

from __future__ import annotations

from collections.abc import Callable

import dash
from flask import Flask

from dashboards import board, pet, plan, response, review

DashFactory = Callable[[Flask], dash.Dash]

DASHBOARDS: tuple[tuple[str, DashFactory], ...] = (
    (plan.URL_BASE, plan.create_dash),
    (response.BASE_PATH, response.create_response_app),
    (board.BASE_PATH, board.create_board_app),
    (pet.BASE_PATH, pet.create_pet_app),
    (review.URL_BASE, review.create_review_app),
)
