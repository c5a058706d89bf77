"""``oncopacs user …`` and ``oncopacs token …``: accounts, roles, second factors, sign-in throttles and API tokens.

Every change is written to the audit trail as USER_CHANGE, by the operating-system user who ran
the command (actor kind ``system``). Errors: one line on standard error, exit status 2.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from oncopacs.audit.events import ActorKind, AuditAction, AuditEvent, Outcome
from oncopacs.auth.roles import Role
from oncopacs.auth.users import utc_now
from oncopacs.cli.context import opened_platform

if TYPE_CHECKING:
    from oncopacs.platform import Platform

ROLE_NAMES = ", ".join(role.value for role in Role)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid {os.getuid()}"


class _Accounts:
    """The user store and audit trail of the configured platform, for one command."""

    def __init__(self, platform: Platform):
        self.store = platform.users
        self.trail = platform.audit

    def audit(self, note: str) -> None:
        self.trail.record(AuditEvent(action=AuditAction.USER_CHANGE, outcome=Outcome.SUCCESS, actor=_os_user(),
                                     actor_kind=ActorKind.SYSTEM, source=socket.gethostname(), detail=f"cli: {note}"))


@contextmanager
def _accounts(ctx: click.Context) -> Iterator[_Accounts]:
    with opened_platform(ctx) as platform:
        try:
            yield _Accounts(platform)
        except ValueError as exc:  # bad role, short password, name taken, last administrator
            click.echo(f"oncopacs: {exc}", err=True)
            sys.exit(2)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            click.echo("oncopacs: no password on standard input", err=True)
            sys.exit(2)
        return password
    return click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)


@click.group("user")
def user_group() -> None:
    """Manage users: add, list, change roles, disable, second factor, unlock."""


@user_group.command("add")
@click.argument("name")
@click.option("--role", required=True, help=f"One of: {ROLE_NAMES}.")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of standard input.")
@click.pass_context
def add_user(ctx: click.Context, name: str, role: str, password_stdin: bool) -> None:
    """Add user NAME with ROLE."""
    password = _read_password(password_stdin)
    with _accounts(ctx) as accounts:
        user = accounts.store.add_user(name, role, password)
        accounts.audit(f"added user {user.username!r} with role {user.role.value}")
    click.echo(f"added {user.username} ({user.role.value})", err=True)


@user_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def list_users(ctx: click.Context, as_json: bool) -> None:
    """List users, their roles and state."""
    with _accounts(ctx) as accounts:
        found = accounts.store.list_users()
    if as_json:
        click.echo(json.dumps({"users": [user.to_dict() for user in found]}, indent=2))
        return
    for user in found:
        state = "disabled" if user.disabled else "active"
        failures = f"\t{user.failed_logins} failed sign-in(s)" if user.failed_logins else ""
        click.echo(f"{user.username}\t{user.role.value}\t{state}{chr(9) + 'totp' if user.has_totp else ''}{failures}")


@user_group.command("set-role")
@click.argument("name")
@click.argument("role")
@click.pass_context
def set_role(ctx: click.Context, name: str, role: str) -> None:
    """Give user NAME the role ROLE."""
    with _accounts(ctx) as accounts:
        user = accounts.store.set_role(name, role)
        accounts.audit(f"user {name!r}: role {user.role.value}")


@user_group.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of standard input.")
@click.pass_context
def set_password(ctx: click.Context, name: str, password_stdin: bool) -> None:
    """Replace the password of user NAME (ends their sessions, clears a lock-out)."""
    password = _read_password(password_stdin)
    with _accounts(ctx) as accounts:
        accounts.store.set_password(name, password)
        accounts.audit(f"user {name!r}: password changed")


@user_group.command("disable")
@click.argument("name")
@click.pass_context
def disable(ctx: click.Context, name: str) -> None:
    """Disable user NAME: every password, session and token of theirs is refused."""
    with _accounts(ctx) as accounts:
        accounts.store.set_disabled(name, True)
        accounts.audit(f"user {name!r}: disabled")


@user_group.command("enable")
@click.argument("name")
@click.pass_context
def enable(ctx: click.Context, name: str) -> None:
    """Enable user NAME again."""
    with _accounts(ctx) as accounts:
        accounts.store.set_disabled(name, False)
        accounts.audit(f"user {name!r}: enabled")


@user_group.command("unlock")
@click.argument("name", required=False)
@click.option("--address", "addresses", multiple=True, metavar="ADDR",
              help="Lift the sign-in throttle of this source address (repeatable).")
@click.option("--all", "every_address", is_flag=True, help="Lift the sign-in throttle of every address.")
@click.pass_context
def unlock(ctx: click.Context, name: str | None, addresses: tuple[str, ...], every_address: bool) -> None:
    """Lift sign-in throttles (--address ADDR, --all) and forget the failed sign-ins of user NAME.

    Accounts never lock: failed sign-ins throttle the address they come from. This lifts that
    throttle at once, from the console, so an administrator is always reachable.
    """
    if not (name or addresses or every_address):
        click.echo("oncopacs: name a user, --address ADDR or --all", err=True)
        sys.exit(2)
    with _accounts(ctx) as accounts:
        if name:
            accounts.store.unlock(name)
            accounts.audit(f"user {name!r}: unlocked")
        if every_address:
            cleared = accounts.store.throttle.clear()
            accounts.audit(f"sign-in throttle lifted for every address ({cleared} cleared)")
            click.echo(f"sign-in throttle lifted for every address ({cleared} cleared)", err=True)
        for address in () if every_address else addresses:
            cleared = accounts.store.throttle.clear(address)
            accounts.audit(f"sign-in throttle lifted for {address}")
            click.echo(f"sign-in throttle lifted for {address}" + ("" if cleared else " (it had none)"), err=True)


@user_group.command("throttled")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def throttled(ctx: click.Context, as_json: bool) -> None:
    """List source addresses with recent failed sign-ins, and until when each is refused."""
    with _accounts(ctx) as accounts:
        found = accounts.store.throttle.active(utc_now())
    if as_json:
        click.echo(json.dumps({"sources": [state.to_dict() for state in found]}, indent=2))
        return
    for state in found:
        until = f"refused until {state.throttled_until:%Y-%m-%d %H:%M} UTC" if state.throttled_until else "open"
        click.echo(f"{state.source}\t{state.failures} failure(s)\t{until}")


@user_group.command("totp")
@click.argument("name")
@click.option("--disable", "turn_off", is_flag=True, help="Remove the second factor instead.")
@click.pass_context
def totp(ctx: click.Context, name: str, turn_off: bool) -> None:
    """Give user NAME a new TOTP second factor and print its otpauth:// URI (for an authenticator app)."""
    with _accounts(ctx) as accounts:
        if turn_off:
            accounts.store.disable_totp(name)
            accounts.audit(f"user {name!r}: second factor removed")
            return
        enrollment = accounts.store.enable_totp(name)
        accounts.audit(f"user {name!r}: new second factor")
    click.echo(enrollment.provisioning_uri)


@click.group("token")
def token_group() -> None:
    """Manage API tokens for machine clients (Authorization: Bearer …)."""


@token_group.command("create")
@click.argument("name")
@click.option("--label", default="", help="What the token is for (at most 64 characters).")
@click.pass_context
def create_token(ctx: click.Context, name: str, label: str) -> None:
    """Create a token for user NAME and print it (shown this once only)."""
    with _accounts(ctx) as accounts:
        issued = accounts.store.issue_token(name, label)
        accounts.audit(f"token {issued.id} created for {name!r}" + (f" ({label})" if label else ""))
    click.echo(issued.token)
    click.echo(f"token {issued.id} for {name}: store it now, it is not shown again", err=True)


@token_group.command("list")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def list_tokens(ctx: click.Context, name: str, as_json: bool) -> None:
    """List the tokens of user NAME (never their text)."""
    with _accounts(ctx) as accounts:
        tokens = accounts.store.list_tokens(name)
    if as_json:
        click.echo(json.dumps({"tokens": [token.to_dict() for token in tokens]}, indent=2))
        return
    for token in tokens:
        state = f"revoked {token.revoked_at:%Y-%m-%d %H:%M}" if token.revoked_at else "active"
        used = f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never used"
        click.echo(f"{token.id}\t{token.label or '-'}\t{token.created_at:%Y-%m-%d %H:%M}\t{used}\t{state}")


@token_group.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@click.pass_context
def revoke_token(ctx: click.Context, token_id: int) -> None:
    """Revoke token ID: requests bearing it get 401 from now on."""
    with _accounts(ctx) as accounts:
        token = accounts.store.revoke_token(token_id)
        accounts.audit(f"token {token_id} of {token.username!r} revoked")
