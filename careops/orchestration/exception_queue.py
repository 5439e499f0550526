"""The exception queues: list work oldest first, resolve it exactly once."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from pydantic import ValidationError
from sqlalchemy import String, case, cast, func, select
from sqlalchemy.orm import Session

from careops.db import Database
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import ExceptionItem, IntakeItem, ServiceCase, User, find, is_id, new_id, utcnow
from careops.domain.referrals import KNOWN_FIELDS, ReferralIn
from careops.errors import Conflict, NotFound, ValidationFailed
from careops.governance.duties import check_duties
from careops.governance.scoping import LocationScope
from careops.orchestration.intake import (
    INTAKE_QUEUE,
    CatalogueCache,
    case_or_link,
    check_location,
    evaluate,
    insert_case,
)
from careops.settings import Settings


def open_exception(
    session: Session,
    queue: str,
    reasons: list[str],
    *,
    actor: str,
    case: ServiceCase | None = None,
    location_id: str | None = None,
    intake_item_id: str | None = None,
    dedupe_key: str | None = None,
) -> ExceptionItem:
    """In the caller's transaction: an open item in ``queue`` for a person, and ``exception.opened``.

    With a ``dedupe_key`` an item still open under it is reused (its reasons replaced) rather
    than a second one opened.
    """
    if dedupe_key is not None:
        existing = session.scalars(
            select(ExceptionItem).where(ExceptionItem.dedupe_key == dedupe_key).with_for_update()
        ).first()
        if existing is not None and existing.status == "open":
            existing.reason_codes = reasons
            return existing
        if existing is not None:
            existing.dedupe_key = None  # a resolved item gives its key to the new one
            session.flush()
    item = ExceptionItem(
        id=new_id(),
        queue=queue,
        status="open",
        reason_codes=reasons,
        case_id=case.id if case else None,
        location_id=case.location_id if case else location_id,
        intake_item_id=intake_item_id,
        dedupe_key=dedupe_key,
        created_at=utcnow(),
    )
    session.add(item)
    session.flush()
    payload = {"queue": queue, "reason_codes": reasons}
    record_events(
        session, Event.about_exception(EventType.EXCEPTION_OPENED, item, actor=actor, payload=payload)
    )
    return item


def close_exception_item(session: Session, item: ExceptionItem, outcome: str, *, actor: str) -> None:
    """In the caller's transaction: mark an open item resolved with ``outcome`` and record it."""
    item.status = "resolved"
    item.resolved_at = utcnow()
    item.resolution = {"outcome": outcome}
    record_events(
        session,
        Event.about_exception(EventType.EXCEPTION_RESOLVED, item, actor=actor, payload={"outcome": outcome}),
    )


def close_item_under(session: Session, dedupe_key: str, outcome: str, *, actor: str) -> None:
    """In the caller's transaction: close the open item under ``dedupe_key``, if there is one
    (what was waiting on it has been dealt with)."""
    item = session.scalars(
        select(ExceptionItem)
        .where(ExceptionItem.dedupe_key == dedupe_key, ExceptionItem.status == "open")
        .with_for_update()
    ).first()
    if item is not None:
        close_exception_item(session, item, outcome, actor=actor)


def _open_item(session: Session, exception_id: str, scope: LocationScope) -> ExceptionItem:
    """The item, locked, if it is open and at the caller's locations (404, 409 otherwise)."""
    item = find(session, ExceptionItem, exception_id, for_update=True)
    if item is None:
        raise NotFound("no exception item with this id")
    scope.check(item.location_id, "exception item")
    if item.status != "open":
        raise Conflict("this exception item is already resolved", case_id=item.case_id)
    return item


def close_exception(
    db: Database, exception_id: str, outcome: str, *, actor: str, scope: LocationScope
) -> dict[str, Any]:
    """Close an item of a queue other than intake (those are resolved by completing the referral)
    once a person has dealt with it: a merge confirmed in the patient index, an authorisation
    renewed, a cancellation followed up."""
    with db.transaction() as session:
        item = _open_item(session, exception_id, scope)
        if item.queue == INTAKE_QUEUE:
            raise Conflict("an intake item is resolved by completing its referral (POST …/resolve)")
        close_exception_item(session, item, outcome, actor=actor)
        return exception_view(item)


def exception_view(item: ExceptionItem) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": item.id,
        "queue": item.queue,
        "status": item.status,
        "reason_codes": item.reason_codes,
        "intake_item_id": item.intake_item_id,
        "case_id": item.case_id,
        "location_id": item.location_id,
        "assignee": item.assignee,
        "created_at": item.created_at.isoformat(),
        "age_seconds": int((now - item.created_at).total_seconds()),
        "resolution": item.resolution,
    }


def list_exceptions(
    db: Database,
    queue: str | None,
    status: str,
    limit: int,
    scope: LocationScope,
    *,
    reason: str | None = None,
    older_than_seconds: int | None = None,
    assignee: str | None = None,
) -> list[dict[str, Any]]:
    """A queue's items, oldest first; ``reason`` keeps those with that reason code,
    ``older_than_seconds`` those waiting longer, ``assignee`` those given to that user (``""``:
    to nobody)."""
    query = scope.restrict(
        select(ExceptionItem).where(ExceptionItem.status == status), ExceptionItem.location_id
    )
    if queue:
        query = query.where(ExceptionItem.queue == queue)
    if reason:  # the codes are a JSON list: its text holds each one in quotes
        query = query.where(cast(ExceptionItem.reason_codes, String).contains(f'"{reason}"', autoescape=True))
    if assignee is not None:
        query = query.where(
            ExceptionItem.assignee == assignee if assignee else ExceptionItem.assignee.is_(None)
        )
    if older_than_seconds:
        query = query.where(ExceptionItem.created_at < utcnow() - dt.timedelta(seconds=older_than_seconds))
    with db.sessions() as session:
        rows = session.scalars(query.order_by(ExceptionItem.created_at, ExceptionItem.id).limit(limit)).all()
        return [exception_view(r) for r in rows]


# How long an item may wait in its queue before it is past its service level, in hours.
QUEUE_SLA_HOURS = {"intake": 4.0, "triage": 1.0, "scheduling": 24.0}
DEFAULT_SLA_HOURS = 8.0


def queue_summary(db: Database, scope: LocationScope) -> list[dict[str, Any]]:
    """Each queue with open items in the caller's locations: how many, the oldest one's age, the
    median and 90th-percentile ages (seconds), and how many are past the queue's service level
    (``QUEUE_SLA_HOURS``)."""
    now = utcnow()
    open_items = scope.restrict(
        select(ExceptionItem).where(ExceptionItem.status == "open"),
        ExceptionItem.location_id,
    ).subquery()
    due = case(  # when an item of each queue passes its service level, if it was received before
        {queue: now - dt.timedelta(hours=hours) for queue, hours in QUEUE_SLA_HOURS.items()},
        value=open_items.c.queue,
        else_=now - dt.timedelta(hours=DEFAULT_SLA_HOURS),
    )
    late = func.sum(case((open_items.c.created_at < due, 1), else_=0))
    query = select(open_items.c.queue, func.count(), func.min(open_items.c.created_at), late).group_by(
        open_items.c.queue
    )
    with db.sessions() as session:
        rows = session.execute(query.order_by(open_items.c.queue)).all()
        summary = []
        for queue, count, oldest, past_sla in rows:
            ages = {}
            for name, share in (("p50_age_seconds", 0.5), ("p90_age_seconds", 0.9)):
                rank = max(0, math.ceil(share * count) - 1)  # youngest first: the age at that rank
                at = session.scalar(
                    select(open_items.c.created_at)
                    .where(open_items.c.queue == queue)
                    .order_by(open_items.c.created_at.desc())
                    .offset(rank)
                    .limit(1)
                )
                ages[name] = int((now - at).total_seconds()) if at is not None else 0
            summary.append(
                {
                    "queue": queue,
                    "open": int(count),
                    "oldest_age_seconds": int((now - oldest).total_seconds()),
                    **ages,
                    "sla_hours": QUEUE_SLA_HOURS.get(queue, DEFAULT_SLA_HOURS),
                    "past_sla": int(past_sla or 0),
                }
            )
        return summary


# The field a reason code asks a human to supply (``missing_field:`` and ``invalid_field:`` name theirs).
_FIELD_OF_REASON = {
    "unknown_location": "location",
    "unknown_service_code": "service_code",
    "unknown_referrer_code": "referrer.code",
    "unknown_payer_code": "payer_code",
}


def fields_to_complete(reason_codes: list[str]) -> list[str]:
    """The referral fields that resolving an intake item with these reasons needs, in order."""
    fields = []
    for code in reason_codes:
        kind, _, name = code.partition(":")
        field = name if kind in ("missing_field", "invalid_field") else _FIELD_OF_REASON.get(code)
        if field in KNOWN_FIELDS and field not in fields:
            fields.append(field)
    return fields


def assign_exceptions(
    db: Database, exception_ids: list[str], assignee: str | None, *, actor: str, scope: LocationScope
) -> int:
    """Give open items to ``assignee`` (an active console user's name; None: back to the queue),
    each with an ``exception.assigned`` event; items not open, not in the caller's locations or
    already theirs are left as they are. How many changed hands."""
    with db.transaction() as session:
        if assignee is not None:
            active = select(User.id).where(User.username == assignee, User.disabled_at.is_(None))
            if session.scalar(active) is None:
                raise ValidationFailed(
                    "no active console user with this name",
                    errors=[{"field": "assignee", "message": "no active console user with this name"}],
                )
        query = scope.restrict(
            select(ExceptionItem).where(
                ExceptionItem.id.in_([i for i in exception_ids[:500] if is_id(i)]),
                ExceptionItem.status == "open",
            ),
            ExceptionItem.location_id,
        )
        changed = [item for item in session.scalars(query.with_for_update()) if item.assignee != assignee]
        for item in changed:
            item.assignee = assignee
        record_events(
            session,
            *(
                Event.about_exception(
                    EventType.EXCEPTION_ASSIGNED, item, actor=actor, payload={"assignee": assignee}
                )
                for item in changed
            ),
        )
        return len(changed)


def get_exception(db: Database, exception_id: str, scope: LocationScope) -> dict[str, Any]:
    """The item, with ``next_id``: the open item of its queue that has waited next longest."""
    with db.sessions() as session:
        item = find(session, ExceptionItem, exception_id)
        if item is None:
            raise NotFound("no exception item with this id")
        scope.check(item.location_id, "exception item")
        after = scope.restrict(
            select(ExceptionItem.id).where(
                ExceptionItem.queue == item.queue,
                ExceptionItem.status == "open",
                (ExceptionItem.created_at > item.created_at)
                | ((ExceptionItem.created_at == item.created_at) & (ExceptionItem.id > item.id)),
            ),
            ExceptionItem.location_id,
        )
        next_id = session.scalar(after.order_by(ExceptionItem.created_at, ExceptionItem.id).limit(1))
        return {**exception_view(item), "next_id": next_id}


def _merge(original: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    merged = {
        **original,
        "patient": dict(original.get("patient", {})),
        "referrer": dict(original.get("referrer", {})),
    }
    for name, value in fields.items():
        if name not in KNOWN_FIELDS:
            raise ValidationFailed(
                f"unknown field {name!r}", errors=[{"field": name, "message": "unknown field"}]
            )
        section, _, leaf = name.partition(".")
        if leaf:
            merged[section][leaf] = value
        else:
            merged[name] = value
    return merged


def resolve_intake_exception(
    db: Database,
    exception_id: str,
    fields: dict[str, str],
    *,
    actor: str,
    settings: Settings,
    catalogue: CatalogueCache,
    scope: LocationScope,
) -> dict[str, Any]:
    """Apply the supplied fields to the original referral; create its case (once) when complete.

    A caller bound to some locations can only resolve their items, into cases at their locations.
    """
    with db.transaction() as session:
        item = _open_item(session, exception_id, scope)
        intake = session.get(IntakeItem, item.intake_item_id) if item.intake_item_id else None
        if intake is None or intake.normalised is None:
            raise Conflict("this exception item has no referral to complete")
        check_duties(
            settings.separation_of_duties, "exceptions:resolve", actor, {"requester": intake.principal_id}
        )
        try:
            referral_in = ReferralIn.model_validate(_merge(intake.normalised, fields))
        except ValidationError as exc:
            raise ValidationFailed.from_errors(exc.errors()) from exc
        evaluation = evaluate(catalogue.get(db), referral_in, settings, intake.sender)
        if evaluation.reasons:
            raise ValidationFailed("the referral is still incomplete", reason_codes=evaluation.reasons)
        check_location(scope, evaluation.references.location)
        context = {"actor": actor, "correlation_id": None}
        connection = session.connection()
        answer, case_row = case_or_link(
            connection, intake.id, evaluation, settings, context, intake.channel, intake.received_at
        )
        insert_case(connection, case_row)
        intake.normalised = referral_in.model_dump(mode="json", exclude_none=True)
        intake.status = answer.item_status
        intake.case_id = answer.body["case_id"]
        item.status = "resolved"
        item.case_id = answer.body["case_id"]
        item.resolved_at = utcnow()
        item.resolution = {"outcome": answer.body["outcome"], "fields": sorted(fields)}
        record_events(
            session,
            *answer.events,
            Event.about_exception(
                EventType.EXCEPTION_RESOLVED, item, actor=actor, payload={"outcome": answer.body["outcome"]}
            ),
        )
        return {**answer.body, "exception_id": item.id}
