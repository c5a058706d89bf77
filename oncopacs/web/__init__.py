"""The Flask application: the only package of ``oncopacs`` that imports Flask."""

from oncopacs.web.app import create_app

__all__ = ["create_app"]
