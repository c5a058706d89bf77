"""The ``oncopacs`` command line: one module per command group, each taking the platform of :mod:`oncopacs.platform`."""

from oncopacs.cli.main import main

__all__ = ["main"]
