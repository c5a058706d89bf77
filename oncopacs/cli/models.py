"""``oncopacs models``: the model registry — the analysis and AI plug-ins installed under the entry-point group
``oncopacs.analyses``, whether each may run and how many objects it has stored; enabling or disabling one."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.cli.context import opened_platform
from oncopacs.cli.output import emit
from oncopacs.errors import NotFoundError
from oncopacs.orchestration.registry import ModelRegistry

if TYPE_CHECKING:
    from oncopacs.platform import Platform


@click.group("models")
def models_group() -> None:
    """Analysis and AI plug-ins (a package declaring an ``oncopacs.analyses`` entry point adds one)."""


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of the table.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """Every installed plug-in: name, version, what it accepts and produces, ENABLED or disabled, how many objects
    it has stored; one that cannot load, and why."""
    with opened_platform(ctx) as platform:
        statuses = _registry(platform).list()
    emit({"models": [status.to_dict() for status in statuses]}, as_json, _render)


@models_group.command("enable")
@click.argument("name")
@click.pass_context
def enable_command(ctx: click.Context, name: str) -> None:
    """Let the plug-in NAME run again (recorded in the audit trail under the operating-system user)."""
    _set_enabled(ctx, name, True)


@models_group.command("disable")
@click.argument("name")
@click.pass_context
def disable_command(ctx: click.Context, name: str) -> None:
    """Stop the plug-in NAME from running: its rule jobs finish as skipped (recorded in the audit trail)."""
    _set_enabled(ctx, name, False)


def _registry(platform: Platform) -> ModelRegistry:
    """The installed plug-ins and configured inference endpoints, their state kept in the platform's index."""
    return platform.models


def _set_enabled(ctx: click.Context, name: str, enabled: bool) -> None:
    actor, word = _os_user(), "enabled" if enabled else "disabled"
    with opened_platform(ctx) as platform:
        try:
            status = _registry(platform).set_enabled(name, enabled, actor)
        except NotFoundError as exc:
            raise click.ClickException(str(exc)) from None
        platform.audit.record(AuditEvent(action=AuditAction.CONFIG_CHANGE, outcome=Outcome.SUCCESS, actor=actor,
                                         actor_kind=ActorKind.USER, source=socket.gethostname(),
                                         detail=f"oncopacs models {'enable' if enabled else 'disable'}: "
                                                f"model {status.name} {word}"))
    click.echo(f"{status.name} {word}")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _render(document: dict) -> Iterator[str]:
    models = document["models"]
    if not models:
        yield "no plug-in installed (entry-point group oncopacs.analyses)"
        return
    for model in models:
        state = f"{'ENABLED' if model['enabled'] else 'disabled'}  {model['produced']} produced"
        if not model["loaded"]:
            yield f"{model['name']}  cannot be loaded: {model['problem']}  {state}  ({model['source']})"
            continue
        accepts = ", ".join(model["accepts"]["modalities"])
        yield (f"{model['name']} {model['version']}  accepts {accepts}  produces {', '.join(model['produces'])}  "
               f"{state}  ({model['source']})")
