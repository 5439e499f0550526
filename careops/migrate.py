"""Schema migrations: apply them, and tell whether a database is current."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from careops.errors import ConfigurationError


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "careops:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def pending_revision(engine: Engine) -> str | None:
    """None when the database is at the newest revision, else the revision it should reach."""
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return None if current == head else head


def require_current(engine: Engine) -> None:
    if pending_revision(engine) is not None:
        raise ConfigurationError("the database schema is not current: run `careops migrate` first")
