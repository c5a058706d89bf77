"""A page's refusal (400, 403, 404, 409, an expired form) as the sentence a person reads instead of JSON."""

from __future__ import annotations

from collections.abc import Mapping

from flask import current_app, g, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from oncopacs.auth.roles import PERMISSIONS, Permission


def explain_refusal(exc: HTTPException, what_it_allows: Mapping[Permission, str]) -> str:
    """The sentence for ``exc``: for a 403, which roles may do what the page's permission allows (in the words of
    ``what_it_allows``); for an expired form, what to do; else the refusal's own description as a sentence."""
    principal = g.get("principal")
    view = current_app.view_functions.get(request.endpoint or "")
    permission = getattr(view, "required_permission", None)
    if exc.code == 403 and principal is not None and permission is not None and not principal.can(permission):
        roles = ", ".join(role.label for role, allowed in PERMISSIONS.items() if permission in allowed)
        return (f"Your role ({principal.role.label}) may not {what_it_allows.get(permission, permission.value)}; "
                f"these roles may: {roles}.")
    if isinstance(exc, CSRFError):
        return ("This form has expired or did not come from this site (its security token is missing or stale). "
                "Go back, reload the page and try again.")
    return as_sentence(exc.description or exc.name)


def as_sentence(text: str) -> str:
    """``text`` with a capital first letter and a full stop."""
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


__all__ = ["as_sentence", "explain_refusal"]
