"""WSGI entry point for production servers: ``waitress-serve wsgi:app`` (DIMSE runs via ``oncopacs serve``)."""

import logging

from oncopacs.web import create_app

logging.basicConfig(level=logging.INFO)
app = create_app()
