"""The ``oncopacs`` command line: one module per command group, all taking the platform from :mod:`oncopacs.platform`."""

from oncopacs.cli.main import main

__all__ = ["main"]
