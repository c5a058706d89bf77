"""WSGI entry point for production servers: ``waitress-serve wsgi:app`` (DIMSE runs via ``oncopacs serve``)."""

import logging

from oncopacs.platform import open_platform
from oncopacs.settings import Settings
from oncopacs.web.app import create_app

logging.basicConfig(level=logging.INFO)
app = create_app(open_platform(Settings.load()))
