"""record_events: events in order, each follow-up's outbox row pointing at its own event."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

import careops.db
import careops.domain.events
from careops.db import Database
from careops.domain.events import Event, EventType, FollowUp, record_events
from careops.domain.models import Base, BusinessEvent, Document, IntakeItem, OutboxMessage
from tests.test_db_run import _document, _item

_items = Base.metadata.tables[IntakeItem.__tablename__]
_documents = Base.metadata.tables[Document.__tablename__]


@pytest.fixture
def db(empty_db: Database) -> Database:
    """No demo organisation: the event log starts empty."""
    return empty_db


def event(event_type: EventType, subject_id: str, *follow_ups: FollowUp) -> Event:
    return Event(event_type, subject_type="case", subject_id=subject_id, actor="test", follow_ups=follow_ups)


def test_outbox_rows_point_at_their_own_events_in_order(db: Database) -> None:
    with db.writer() as connection:
        record_events(
            connection,
            event(EventType.REFERRAL_RECEIVED, "a"),
            event(EventType.CASE_CREATED, "b", FollowUp.AWAIT_TRIAGE),
            event(EventType.AUTHORISATION_REQUIRED, "b"),
            event(EventType.CASE_CREATED, "c", FollowUp.AWAIT_TRIAGE),
        )
    with db.sessions() as session:
        events = session.execute(
            select(BusinessEvent.id, BusinessEvent.type, BusinessEvent.subject_id).order_by(BusinessEvent.id)
        ).all()
        outbox = session.execute(
            select(OutboxMessage.event_id, OutboxMessage.destination, OutboxMessage.status).order_by(
                OutboxMessage.id
            )
        ).all()
    assert [(t, s) for _, t, s in events] == [
        ("referral.received", "a"),
        ("case.created", "b"),
        ("authorisation.required", "b"),
        ("case.created", "c"),
    ]
    ids = {(t, s): i for i, t, s in events}
    assert sorted(outbox) == sorted(
        [
            (ids[("case.created", "b")], "workflow.await_triage", "pending"),
            (ids[("case.created", "c")], "workflow.await_triage", "pending"),
        ]
    )


def test_events_without_follow_ups_write_no_outbox_row(db: Database) -> None:
    with db.writer() as connection:
        record_events(connection, event(EventType.CASE_TRIAGED, "a"), event(EventType.CASE_TRANSITIONED, "a"))
    with db.sessions() as session:
        assert len(session.scalars(select(BusinessEvent.id)).all()) == 2
        assert session.scalars(select(OutboxMessage.id)).all() == []


def test_two_waiting_events_of_one_type_and_subject_are_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="differ in type or subject"), db.writer() as connection:
        record_events(
            connection,
            event(EventType.CASE_CREATED, "a", FollowUp.AWAIT_TRIAGE),
            event(EventType.CASE_CREATED, "a", FollowUp.AWAIT_TRIAGE),
        )


def test_rows_together_with_the_events_are_one_statement_on_postgresql(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The intake's writes: its rows, the events and their outbox rows; on PostgreSQL one statement,
    which fails whole when a row points at nothing."""
    statements: list[object] = []
    real_run = careops.db.run
    counted = lambda *args: statements.append(args[1]) or real_run(*args)  # noqa: E731
    monkeypatch.setattr(careops.db, "run", counted)
    monkeypatch.setattr(careops.domain.events, "run", counted)
    item = _item()
    with db.pipelined_writer() as connection:
        record_events(
            connection,
            event(EventType.REFERRAL_RECEIVED, item["id"]),
            event(EventType.CASE_CREATED, "b", FollowUp.AWAIT_TRIAGE),
            together=[(_items, [item]), (_documents, [_document(item["id"], "page")])],
        )
    assert len(statements) == (1 if db.engine.dialect.name == "postgresql" else 4)
    with db.sessions() as session:
        assert session.get(IntakeItem, item["id"]) is not None
        assert session.scalars(select(Document.text).where(Document.intake_item_id == item["id"])).all() == [
            "letter page"
        ]
        (created,) = session.scalars(select(BusinessEvent.id).where(BusinessEvent.subject_id == "b")).all()
        assert session.scalars(select(OutboxMessage.event_id)).all() == [created]
    with pytest.raises(IntegrityError), db.pipelined_writer() as connection:
        record_events(
            connection,
            event(EventType.CASE_CREATED, "c", FollowUp.AWAIT_TRIAGE),
            together=[(_items, [_item()]), (_documents, [_document("no-such-item", "orphan")])],
        )
    with db.sessions() as session:
        assert session.scalars(select(BusinessEvent.id).where(BusinessEvent.subject_id == "c")).all() == []
        assert len(session.scalars(select(OutboxMessage.id)).all()) == 1
