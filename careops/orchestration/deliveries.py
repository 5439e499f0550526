"""Deliveries to outbound connectors, as records: planned from the audit chain, claimed by due
time, settled with retry, backoff and jitter, a circuit breaker per connector, dead letters and
replay. Sending is the integrations layer's (integrations.outbound.delivery); this module only
keeps the books, in short transactions.

- **Planning** reads the sealed events past the ``deliveries`` cursor (``automation_cursor``) in
  audit-chain order and writes one delivery per subscribed connector (and for a rule's
  ``connector.call_queued``, one to the connector it names); the unique (event, connector) and
  the locked cursor make each exactly once. A first start reads on from now.
- **Claiming** takes due pending deliveries ``FOR UPDATE SKIP LOCKED`` and leases them (their due
  time moves ``LEASE`` ahead), so that a worker that dies mid-send leaves them to another; the
  target sees the delivery's id as its idempotency key and takes a resend once. A connector whose
  breaker is open is skipped; a half-open one gets one probe. A connector that keeps order gets
  only the oldest pending delivery of each case.
- **Settling** records the outcome: delivered; or failed and due again after ``first * 2^(n-1)``
  (at most ``longest``) times a jitter in [0.5, 1]; or dead when its attempts or its age are
  spent. Each outcome is a business event; the breaker counts failures in a row.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.orm import Session, aliased

from careops.db import Database
from careops.domain.automation import AutomationCursor
from careops.domain.deliveries import ConnectorBreaker, Delivery
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import BusinessEvent, Location, utcnow
from careops.errors import Conflict, NotFound

CURSOR = "deliveries"
LEASE = dt.timedelta(seconds=60)


class Policy(Protocol):
    """What the books need of a subscription (integrations.outbound.subscriptions.Subscription)."""

    @property
    def name(self) -> str: ...
    @property
    def events(self) -> frozenset[str]: ...
    @property
    def ordered(self) -> bool: ...
    @property
    def attempts(self) -> int: ...
    @property
    def max_age_seconds(self) -> float: ...
    @property
    def first_seconds(self) -> float: ...
    @property
    def longest_seconds(self) -> float: ...
    @property
    def breaker_failures(self) -> int: ...
    @property
    def breaker_open_seconds(self) -> float: ...


def plan(db: Database, policies: Iterable[Policy], batch: int = 1000) -> int:
    """Deliveries for the next ``batch`` sealed events; how many events were read."""
    by_type: dict[str, list[str]] = defaultdict(list)
    subscribed = set()
    for policy in policies:
        subscribed.add(policy.name)
        for kind in policy.events:
            by_type[kind].append(policy.name)
    with db.transaction() as session:
        cursor = session.get(AutomationCursor, CURSOR, with_for_update=True)
        if cursor is None:
            head = session.scalar(select(func.max(BusinessEvent.seq))) or 0
            session.add(AutomationCursor(name=CURSOR, seq=head, updated_at=utcnow()))
            return 0
        rows = session.execute(
            select(BusinessEvent.id, BusinessEvent.seq, BusinessEvent.type, BusinessEvent.case_id,
                   BusinessEvent.location_id, BusinessEvent.payload)
            .where(BusinessEvent.seq > cursor.seq)
            .order_by(BusinessEvent.seq)
            .limit(batch)
        ).all()  # fmt: skip
        if not rows:
            return 0
        now = utcnow()
        session.add_all(
            Delivery(event_id=row.id, connector=name, event_type=row.type, case_id=row.case_id,
                     location_id=row.location_id, next_attempt_at=now, created_at=now)
            for row in rows
            for name in _connectors(row.type, row.payload, by_type, subscribed)
        )  # fmt: skip
        cursor.seq, cursor.updated_at = rows[-1].seq, now
        return len(rows)


def _connectors(
    kind: str, payload: dict[str, Any], by_type: dict[str, list[str]], subscribed: set[str]
) -> list[str]:
    """Who gets an event: its subscribers, and for a rule's ``connector.call_queued`` the
    connector it names (when the connectors file knows it)."""
    named = payload.get("connector") if kind == EventType.CONNECTOR_CALL_QUEUED else None
    extra = (
        [named]
        if isinstance(named, str) and named in subscribed and named not in by_type.get(kind, ())
        else []
    )
    return [*by_type.get(kind, ()), *extra]


@dataclass(frozen=True)
class Claimed:
    id: str
    connector: str
    event_id: int
    attempts: int
    created_at: dt.datetime


def _breakers(session: Session) -> dict[str, ConnectorBreaker]:
    return {b.connector: b for b in session.scalars(select(ConnectorBreaker))}


def claim(
    db: Database,
    policies: Iterable[Policy],
    limit: int,
    now: dt.datetime | None = None,
    lease: dt.timedelta = LEASE,
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries of connectors whose breaker lets them through, for
    ``lease`` (longer than a send may take: after it, another worker may send them again)."""
    now = now or utcnow()
    found: list[Claimed] = []
    with db.transaction() as session:
        breakers = _breakers(session)
        for policy in policies:
            breaker = breakers.get(policy.name)
            room = limit - len(found)
            if room <= 0:
                break
            if breaker is not None and breaker.state == "open":
                if breaker.open_until is not None and breaker.open_until > now:
                    continue
                breaker.state, breaker.updated_at = "half_open", now  # one probe
            if breaker is not None and breaker.state == "half_open":
                room = 1
            query = (
                select(Delivery)
                .where(
                    Delivery.status == "pending",
                    Delivery.next_attempt_at <= now,
                    Delivery.connector == policy.name,
                )
                .order_by(Delivery.next_attempt_at)
                .limit(room)
                .with_for_update(skip_locked=True)
            )
            if policy.ordered:
                earlier = aliased(Delivery)
                query = query.where(
                    ~exists().where(
                        and_(earlier.connector == Delivery.connector, earlier.case_id == Delivery.case_id,
                             earlier.status == "pending", earlier.event_id < Delivery.event_id)
                    )
                )  # fmt: skip
            taken = list(session.scalars(query))
            if policy.ordered:
                taken = _first_of_each_case(taken)
            for delivery in taken:
                delivery.next_attempt_at = now + lease
                found.append(
                    Claimed(
                        delivery.id,
                        delivery.connector,
                        delivery.event_id,
                        delivery.attempts,
                        delivery.created_at,
                    )
                )
    return found


def _first_of_each_case(taken: list[Delivery]) -> list[Delivery]:
    """The oldest of each case's deliveries in a claim (and those of no case)."""
    seen: set[str] = set()
    kept = []
    for delivery in taken:
        if delivery.case_id is None or delivery.case_id not in seen:
            kept.append(delivery)
        if delivery.case_id is not None:
            seen.add(delivery.case_id)
    return kept


@dataclass(frozen=True)
class Outcome:
    delivery_id: str
    error: str | None  # None: delivered
    status: int | None = None  # the target's HTTP status, when it answered
    latency_ms: float | None = None


def backoff(policy: Policy, attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: exponential, capped, with
    a jitter in [0.5, 1] so that a recovered target is not hit by every retry at once."""
    base = min(policy.longest_seconds, policy.first_seconds * 2 ** max(0, attempts - 1))
    return float(base * (rng or random).uniform(0.5, 1.0))


def _event(kind: EventType, delivery: Delivery, **payload: Any) -> Event:
    return Event(
        kind,
        "delivery",
        delivery.id,
        "careops:deliveries",
        case_id=delivery.case_id,
        location_id=delivery.location_id,
        payload={"connector": delivery.connector, "event_id": delivery.event_id,
                 "event_type": delivery.event_type, "attempts": delivery.attempts, **payload},
    )  # fmt: skip


def settle(
    db: Database, policies: dict[str, Policy], outcomes: list[Outcome], now: dt.datetime | None = None
) -> None:
    """Record what each attempt did, its event, and each connector's breaker."""
    now = now or utcnow()
    with db.transaction() as session:
        rows = {
            d.id: d
            for d in session.scalars(
                select(Delivery).where(Delivery.id.in_([o.delivery_id for o in outcomes]))
            )
        }
        breakers = _breakers(session)
        events: list[Event] = []
        for outcome in outcomes:
            delivery = rows.get(outcome.delivery_id)
            policy = policies.get(delivery.connector) if delivery is not None else None
            if delivery is None or policy is None or delivery.status != "pending":
                continue
            delivery.attempts += 1
            delivery.last_status, delivery.latency_ms = outcome.status, outcome.latency_ms
            breaker = breakers.get(policy.name)
            if breaker is None:
                breaker = breakers[policy.name] = ConnectorBreaker(
                    connector=policy.name, state="closed", failures=0
                )
                session.add(breaker)
            if outcome.error is None:
                delivery.status, delivery.delivered_at, delivery.last_error = "delivered", now, None
                breaker.state, breaker.failures, breaker.open_until = "closed", 0, None
                events.append(_event(EventType.DELIVERY_SUCCEEDED, delivery, status=outcome.status,
                                     latency_ms=outcome.latency_ms))  # fmt: skip
                continue
            delivery.last_error = outcome.error[:500]
            breaker.failures += 1
            if breaker.state == "half_open" or breaker.failures >= policy.breaker_failures:
                breaker.state, breaker.open_until = (
                    "open",
                    now + dt.timedelta(seconds=policy.breaker_open_seconds),
                )
            breaker.updated_at = now
            age = (now - delivery.created_at).total_seconds()
            if delivery.attempts >= policy.attempts or age >= policy.max_age_seconds:
                delivery.status = "dead"
                events.append(_event(EventType.DELIVERY_DEAD_LETTERED, delivery, error=delivery.last_error))
            else:
                delivery.next_attempt_at = now + dt.timedelta(seconds=backoff(policy, delivery.attempts))
                events.append(_event(EventType.DELIVERY_FAILED, delivery, error=delivery.last_error,
                                     retry_at=delivery.next_attempt_at.isoformat()))  # fmt: skip
        record_events(session, *events)


def replay(db: Database, ids: list[str], *, actor: str) -> int:
    """Dead letters back to pending, due now, their attempts reset (``delivery.replayed``)."""
    now = utcnow()
    with db.transaction() as session:
        found = list(session.scalars(select(Delivery).where(Delivery.id.in_(ids)).with_for_update()))
        if len(ids) == 1 and not found:
            raise NotFound("no delivery with this id")
        dead = [d for d in found if d.status == "dead"]
        if len(ids) == 1 and not dead:
            raise Conflict(f"only a dead letter is replayed; this one is {found[0].status}")
        events = []
        for delivery in dead:
            delivery.status, delivery.attempts, delivery.next_attempt_at = "pending", 0, now
            delivery.created_at = now  # its age counts from the replay
            payload = {"connector": delivery.connector, "event_id": delivery.event_id}
            events.append(
                Event(EventType.DELIVERY_REPLAYED, "delivery", delivery.id, actor, case_id=delivery.case_id,
                      location_id=delivery.location_id, payload=payload)
            )  # fmt: skip
        record_events(session, *events)
        return len(dead)


def dead_letters(
    db: Database,
    *,
    connector: str | None = None,
    older_than: dt.timedelta | None = None,
    ids: list[str] | None = None,
    locations: frozenset[str] | None = None,
) -> list[str]:
    """Dead letters matching the selection (at most 10,000, oldest first)."""
    with db.sessions() as session:
        query = select(Delivery.id).where(Delivery.status == "dead")
        if connector:
            query = query.where(Delivery.connector == connector)
        if older_than is not None:
            query = query.where(Delivery.created_at < utcnow() - older_than)
        if ids is not None:
            query = query.where(Delivery.id.in_(ids))
        if locations is not None:
            query = query.where(Delivery.location_id.in_(locations))
        return list(session.scalars(query.order_by(Delivery.created_at).limit(10_000)))


def purge(db: Database, older_than: dt.timedelta) -> int:
    """Delete delivered rows older than ``older_than`` (their events stay in the audit log)."""
    with db.transaction() as session:
        result = session.execute(
            delete(Delivery).where(
                Delivery.status == "delivered", Delivery.delivered_at < utcnow() - older_than
            )
        )
        return int(getattr(result, "rowcount", 0))


def delivery_view(delivery: Delivery, slugs: dict[str, str]) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "connector": delivery.connector,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "case_id": delivery.case_id,
        "location": slugs.get(delivery.location_id or ""),
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at.isoformat() if delivery.status == "pending" else None,
        "last_error": delivery.last_error,
        "last_status": delivery.last_status,
        "latency_ms": delivery.latency_ms,
        "created_at": delivery.created_at.isoformat(),
        "delivered_at": delivery.delivered_at.isoformat() if delivery.delivered_at else None,
    }


def list_deliveries(
    db: Database,
    *,
    status: str | None = None,
    connector: str | None = None,
    event_type: str | None = None,
    older_than: dt.timedelta | None = None,
    locations: frozenset[str] | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    with db.sessions() as session:
        slugs = {id_: slug for id_, slug in session.execute(select(Location.id, Location.slug))}
        query = select(Delivery)
        for column, value in (
            (Delivery.status, status),
            (Delivery.connector, connector),
            (Delivery.event_type, event_type),
        ):
            if value:
                query = query.where(column == value)
        if older_than is not None:
            query = query.where(Delivery.created_at < utcnow() - older_than)
        if locations is not None:
            query = query.where(Delivery.location_id.in_(locations))
        rows = session.scalars(query.order_by(Delivery.created_at.desc()).limit(limit))
        return [delivery_view(d, slugs) for d in rows]


def get_delivery(db: Database, delivery_id: str, locations: frozenset[str] | None = None) -> dict[str, Any]:
    with db.sessions() as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or (locations is not None and delivery.location_id not in locations):
            raise NotFound("no delivery with this id")
        slugs = {id_: slug for id_, slug in session.execute(select(Location.id, Location.slug))}
        return delivery_view(delivery, slugs)


def health(db: Database, names: Iterable[str]) -> list[dict[str, Any]]:
    """Per connector: breaker state, success rate and p95 latency of the last hour's deliveries,
    backlog and the age of its oldest waiting delivery, dead letters."""
    now = utcnow()
    with db.sessions() as session:
        breakers = _breakers(session)
        found = []
        for name in names:
            recent = session.execute(
                select(Delivery.status, Delivery.latency_ms).where(
                    Delivery.connector == name, Delivery.delivered_at >= now - dt.timedelta(hours=1)
                )
            ).all()
            counts = dict(
                session.execute(
                    select(Delivery.status, func.count())
                    .where(Delivery.connector == name, Delivery.status != "delivered")
                    .group_by(Delivery.status)
                ).all()
            )
            oldest = session.scalar(
                select(func.min(Delivery.created_at)).where(
                    Delivery.connector == name, Delivery.status == "pending"
                )
            )
            hour = (Delivery.connector == name) & (Delivery.created_at >= now - dt.timedelta(hours=1))
            attempted = session.scalar(
                select(func.count()).select_from(Delivery).where(hour, Delivery.attempts > 0)
            )
            latencies = sorted(float(r.latency_ms) for r in recent if r.latency_ms is not None)
            breaker = breakers.get(name)
            found.append({
                "connector": name,
                "breaker": breaker.state if breaker else "closed",
                "delivered_last_hour": len(recent),
                "success_rate": round(len(recent) / attempted, 4) if attempted else None,
                "p95_latency_ms": latencies[max(0, int(len(latencies) * 0.95) - 1)] if latencies else None,
                "backlog": int(counts.get("pending", 0)),
                "oldest_waiting_seconds": (now - oldest).total_seconds() if oldest else 0.0,
                "dead_letters": int(counts.get("dead", 0)),
            })  # fmt: skip
        return found
