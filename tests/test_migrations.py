"""Migrations build exactly the schema the models describe, and 0002 carries idempotency records over."""

from __future__ import annotations

import json
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from careops.domain.models import Base
from careops.migrate import alembic_config, upgrade


def test_the_migrated_schema_matches_the_models(database_url: str) -> None:
    upgrade(database_url)
    engine = create_engine(database_url)
    with engine.connect() as connection:
        differences: list[Any] = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_0002_moves_idempotency_records_onto_intake_items_and_back(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "0001")
    engine = create_engine(database_url)
    body = {"outcome": "case_created", "intake_item_id": "i" * 32, "case_id": "c" * 32}
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO intake_item (id, channel, status, reasons, raw_payload, payload_sha256,"
                " received_at) VALUES (:id, 'api', 'accepted', '[]', '{}', :sha, CURRENT_TIMESTAMP)"
            ),
            {"id": "i" * 32, "sha": "s" * 64},
        )
        connection.execute(
            text(
                "INSERT INTO idempotency_record (principal_id, key, request_sha256, status_code,"
                " response_body, created_at) VALUES ('p', 'key-1', :sha, 201, :body, CURRENT_TIMESTAMP)"
            ),
            {"sha": "s" * 64, "body": json.dumps(body)},
        )
    command.upgrade(config, "head")
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT principal_id, idempotency_key, response_status, response_body FROM intake_item")
        ).one()
    assert row[:3] == ("p", "key-1", 201)
    assert (json.loads(row[3]) if isinstance(row[3], str) else row[3]) == body
    command.downgrade(config, "0001")
    with engine.connect() as connection:
        record = connection.execute(
            text("SELECT principal_id, key, status_code FROM idempotency_record")
        ).one()
    engine.dispose()
    assert tuple(record) == ("p", "key-1", 201)
