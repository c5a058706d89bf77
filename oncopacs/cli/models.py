"""``oncopacs models``: the analysis and AI plug-ins installed under the entry-point group ``oncopacs.analyses``."""

from __future__ import annotations

from collections.abc import Iterator

import click

from oncopacs.cli.output import emit
from oncopacs.orchestration.plugins import discover_plugins


@click.group("models")
def models_group() -> None:
    """Analysis and AI plug-ins (a package declaring an ``oncopacs.analyses`` entry point adds one)."""


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of the table.")
def list_command(as_json: bool) -> None:
    """Every installed plug-in: name, version, what it accepts and produces; one that cannot load, and why."""
    entries = sorted(discover_plugins().values(), key=lambda e: e.name)
    emit({"models": [entry.to_dict() for entry in entries]}, as_json, _render)


def _render(document: dict) -> Iterator[str]:
    models = document["models"]
    if not models:
        yield "no plug-in installed (entry-point group oncopacs.analyses)"
        return
    for model in models:
        if not model["loaded"]:
            yield f"{model['name']}  cannot be loaded: {model['problem']}  ({model['source']})"
            continue
        accepts = ", ".join(model["accepts"]["modalities"])
        yield (f"{model['name']} {model['version']}  accepts {accepts}  produces {', '.join(model['produces'])}  "
               f"({model['source']})")
