"""One database fixture parametrised over SQLite and PostgreSQL; each test gets a fresh database."""

from __future__ import annotations

import os
import queue
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings

from careops.api.app import create_app
from careops.db import Database
from careops.demo.seed import seed_demo
from careops.governance.keys import load_field_keys
from careops.governance.permissions import ADMIN, PHI_READ
from careops.governance.tokens import create_token
from careops.migrate import upgrade
from careops.settings import Settings

# In CI the property tests draw the same examples every run (a run judges the change, not the
# luck of the draw); run locally, they draw new ones each time, which is how they find bugs.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

PG_ADMIN_URL = os.environ.get("CAREOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"


class PostgresDatabases:
    """Creates throw-away databases on the test server (empty, or copies of a template) and drops
    each when its test is done, on a thread of its own while the next tests run."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self._done: queue.Queue[str | None] = queue.Queue()
        self._dropper = threading.Thread(target=self._drop_done, name="drop-test-databases", daemon=True)
        self._dropper.start()

    def create(self, template: str | None = None) -> str:
        name = f"careops_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.created.append(name)
        return _pg_url(name)

    def done(self, url: str) -> None:
        """The test that used the database at ``url`` is over: drop it soon."""
        self._done.put(url.rsplit("/", 1)[1])

    def _drop_done(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
            while (name := self._done.get()) is not None:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_all(self) -> None:
        self._done.put(None)
        self._dropper.join()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
            for name in self.created:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    databases = PostgresDatabases()
    yield databases
    databases.drop_all()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database for the test: an empty one, or (for tests with ``empty_db``) a copy of the one
    migrated once per session, made as it is created."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'careops.db'}"
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    template = None
    if "empty_db" in request.fixturenames:
        templates: MigratedTemplates = request.getfixturevalue("migrated_templates")
        template = templates.postgres_name(databases)
    url = databases.create(template)
    yield url
    databases.done(url)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        dbos_database_url=None,
        triage_timeout_seconds=2.0,
        reference_cache_seconds=0,
    )


class MigratedTemplates:
    """A database migrated once per session and backend, that each test's database is copied from
    (a file copy on SQLite, ``CREATE DATABASE … TEMPLATE`` on PostgreSQL): the same schema as
    migrating it again, in a fraction of the time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sqlite: Path | None = None
        self._postgres: str | None = None

    def sqlite(self) -> Path:
        if self._sqlite is None:
            path = self.directory / "template.db"
            upgrade(f"sqlite:///{path}")
            self._sqlite = path
        return self._sqlite

    def postgres_name(self, databases: PostgresDatabases) -> str:
        if self._postgres is None:
            url = databases.create()
            upgrade(url)
            self._postgres = url.rsplit("/", 1)[1]
        return self._postgres

    def copy_into(self, url: str) -> None:
        """Make the (empty) SQLite database at ``url`` a copy of the migrated template (PostgreSQL
        test databases are created as copies: see ``database_url``)."""
        if url.startswith("sqlite:///"):
            shutil.copyfile(self.sqlite(), url.removeprefix("sqlite:///"))


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> MigratedTemplates:
    return MigratedTemplates(tmp_path_factory.mktemp("templates"))


@pytest.fixture
def empty_db(settings: Settings, migrated_templates: MigratedTemplates) -> Iterator[Database]:
    """A migrated database with nothing in it (not even the demo's reference events)."""
    migrated_templates.copy_into(settings.database_url)
    database = Database(settings.database_url)
    load_field_keys(database, settings)
    yield database
    database.dispose()


@pytest.fixture
def db(empty_db: Database) -> Database:
    """A migrated database with the demo organisation (its master data, and their events)."""
    seed_demo(empty_db)
    return empty_db


@pytest.fixture
def admin_token(db: Database) -> str:
    return create_token(db, "test-admin", [ADMIN, PHI_READ], actor="test")[0]


@pytest.fixture
def client(settings: Settings, db: Database, admin_token: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings, db), raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {admin_token}"
        yield test_client


def referral(**overrides: object) -> dict[str, object]:
    """A complete referral for the demo catalogue; overrides replace top-level keys."""
    body: dict[str, object] = {
        "location": "north",
        "service_code": "XRAY-CHEST",
        "priority": "routine",
        "patient": {
            "mrn": f"MRN-{uuid.uuid4().hex[:8]}",
            "given_name": "Alex",
            "family_name": "Example",
            "birth_date": "1980-04-12",
            "phone": "020 7946 0958",
        },
        "referrer": {"code": "GP-001"},
        "payer_code": "NHS",
        "member_id": "943 476 5919",
    }
    body.update(overrides)
    return body


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--deep",
        action="store_true",
        help="fuzz harder: the contract test draws 300 examples an operation from a random seed",
    )
