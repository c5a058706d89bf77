"""What every command gets from the root group: the settings, and the platform opened from them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from oncopacs.settings import Settings

if TYPE_CHECKING:
    from oncopacs.platform import Platform


def settings_of(ctx: click.Context | None = None, **overrides: Any) -> Settings:
    """The root group's settings (loaded from the environment when a command runs on its own), with overrides."""
    obj = (ctx or click.get_current_context()).find_root().obj
    settings = obj if isinstance(obj, Settings) else Settings.load()
    changes = {name: value for name, value in overrides.items() if value is not None}
    return settings.with_overrides(**changes) if changes else settings


@contextmanager
def opened_platform(ctx: click.Context | None = None) -> Iterator[Platform]:
    """The platform of the command's settings, rules installed; closed when the command is done."""
    from oncopacs.platform import open_platform  # the whole platform only for commands that use the archive

    platform = open_platform(settings_of(ctx))
    try:
        yield platform
    finally:
        platform.close()
