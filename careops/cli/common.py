"""What every command group shares: consoles, errors, the caller as audited, options, helpers."""

from __future__ import annotations

import datetime as dt
import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from careops.db import Database
from careops.settings import Settings, get_settings

if TYPE_CHECKING:
    from rich.progress import TaskID

    from careops.governance.principal import Principal

out = Console()
err = Console(stderr=True)


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def cli_actor() -> str:
    """Who acts from the command line, as audited: ``cli:<operating-system user>``."""
    return f"cli:{getpass.getuser()}"


def cli_operator() -> Principal:
    """The command line's principal: whoever runs it holds the database and its keys, so it sees
    everything in clear; what it reads in clear is still audited under ``cli:<user>``."""
    from careops.governance.masking import CLEAR
    from careops.governance.permissions import ADMIN, PHI_READ
    from careops.governance.principal import Principal

    return Principal(cli_actor(), cli_actor(), frozenset({ADMIN, PHI_READ}), masking=CLEAR)


MllpPortOption = Annotated[
    int | None,
    typer.Option("--mllp-port", help="Also listen for HL7 v2 over MLLP on this port (CAREOPS_MLLP_PORT)."),
]


SmtpPortOption = Annotated[
    int | None,
    typer.Option("--smtp-port", help="Also take referral emails over SMTP on this port (CAREOPS_SMTP_PORT)."),
]


def settings_with(**overrides: object) -> Settings:
    settings = get_settings()
    return settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def parse_duration(text: str) -> dt.timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``: the templates' durations (careops.yamldoc)."""
    from careops.yamldoc import PathError
    from careops.yamldoc import parse_duration as duration

    try:
        return duration(text, ())
    except PathError as exc:
        raise typer.BadParameter("use a number followed by d, h, m or s, e.g. 90d") from exc


PasswordOption = Annotated[
    str,
    typer.Option(
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        envvar="CAREOPS_NEW_PASSWORD",
        help="Asked for when not given (or from CAREOPS_NEW_PASSWORD).",
    ),
]


def split_names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar per named step; yields ``report(step, done, total)``."""
    from rich.progress import Progress

    with Progress(console=err, transient=True) as progress:
        tasks: dict[str, TaskID] = {}

        def report(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = progress.add_task(step, total=total)
            progress.update(tasks[step], completed=done, total=total)

        yield report


def ready_database(settings: Settings, field_keys: bool = True) -> Database:
    """The database, migrated, with its field encryption keys unless ``field_keys`` is False
    (commands that never read an encrypted column, like the audit log's, work without them)."""
    from careops.governance.keys import load_field_keys
    from careops.migrate import require_current

    db = Database(settings.database_url)
    require_current(db.engine)
    if field_keys:
        load_field_keys(db, settings)
    return db
