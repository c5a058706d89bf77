"""Where the Dash applications meet Flask: mounting and guarding everything under ``/dashboards/``.

Every Dash route (page, layout, dependencies, callbacks, component bundles, assets, including
routes Dash adds lazily at its first request) gets ``required_permission = DASHBOARDS_VIEW``
through a wrapper installed around ``app.add_url_rule`` for the dashboard prefixes, and one
before-request check refuses any path under ``/dashboards/`` to callers without that permission
(after :mod:`oncopacs.web.auth` has authenticated them, or redirected a browser to ``/login``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from flask import Flask, abort, redirect, request, url_for

from oncopacs.auth.roles import Permission
from oncopacs.web.access import current_principal, requires

DASHBOARDS_ROOT = "/dashboards/"
PERMISSION = Permission.DASHBOARDS_VIEW


def mount_dashboards(app: Flask) -> None:
    """Create every registered Dash app on ``app``; call after ``install_authentication``."""
    from dashboards.registry import DASHBOARDS  # dash is imported only when mounting

    _guard_new_rules(app)
    script_hashes: set[str] = set()
    for base, factory in DASHBOARDS:
        if not (base.startswith(DASHBOARDS_ROOT) and base.endswith("/")):
            raise ValueError(f"dashboard path {base!r} must start with {DASHBOARDS_ROOT!r} and end with '/'")
        dash_app = factory(app)
        if dash_app.config.url_base_pathname != base or dash_app.server is not app:
            raise ValueError(f"the factory for {base!r} built a Dash app at {dash_app.config.url_base_pathname!r}")
        script_hashes.update(dash_app.csp_hashes())  # the renderer's inline script, for the CSP
    app.add_url_rule(DASHBOARDS_ROOT, "dashboards_home", _home)
    app.before_request(_require_dashboards_view)
    app.extensions["oncopacs.dashboards"] = tuple(base for base, _ in DASHBOARDS)
    app.extensions["oncopacs.dashboard_script_hashes"] = tuple(sorted(script_hashes))


def _guard_new_rules(app: Flask) -> None:
    """Wrap ``app.add_url_rule`` so each view under ``/dashboards/`` is guarded, now and lazily later."""
    original: Callable = app.add_url_rule
    if getattr(original, "_oncopacs_dashboards_guard", False):
        return

    @wraps(original)
    def add_url_rule(rule: str, endpoint: str | None = None, view_func: Callable | None = None, *args, **kwargs):
        if rule.startswith(DASHBOARDS_ROOT.rstrip("/")) and view_func is not None \
                and getattr(view_func, "required_permission", None) is None:
            view_func = requires(PERMISSION)(view_func)
        return original(rule, endpoint, view_func, *args, **kwargs)

    add_url_rule._oncopacs_dashboards_guard = True  # type: ignore[attr-defined]
    app.add_url_rule = add_url_rule  # type: ignore[method-assign]


def _require_dashboards_view():
    """The one check covering every path under /dashboards/, routed or not."""
    in_dashboards = request.path == DASHBOARDS_ROOT.rstrip("/") or request.path.startswith(DASHBOARDS_ROOT)
    if in_dashboards and not current_principal().can(PERMISSION):
        abort(403, description=f"your role may not {PERMISSION.value}")
    return None


def _home():
    """``/dashboards/``: the study browser is the way into every dashboard."""
    return redirect(url_for("browser.studies"))
