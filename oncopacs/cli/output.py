"""How analysis commands print: one JSON document with ``--json``, else the lines a renderer makes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import click


def emit(document: dict, as_json: bool, render: Callable[[dict], Iterable[str]]) -> None:
    """Print ``document`` as indented JSON, or the lines ``render(document)`` gives."""
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    for line in render(document):
        click.echo(line)
