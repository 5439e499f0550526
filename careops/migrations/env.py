"""Alembic environment: migrates the database given by careops.migrate (or CAREOPS_DATABASE_URL)."""

from __future__ import annotations

from alembic import context

from careops.db import make_engine
from careops.domain.models import Base
from careops.settings import get_settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run_migrations_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
