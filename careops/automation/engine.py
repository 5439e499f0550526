"""The rule engine: reads committed events in audit-chain order, starts the rules they trigger,
sweeps timers by due time and fires scheduled actions once per tick.

Events come from the audit chain, never from the request path: the sealer numbers each committed
event (``seq``, gap-free, in commit order), and the engine reads past its cursor in batches, in
one transaction per batch that also moves the cursor, so an event is handled once even with
several workers (the cursor row is locked). The event log is the outbox here: a follow-up row
per event would tax every write for the sake of rules that may not exist.

Each rule run is a savepoint: a failure undoes that rule's work only, is recorded as a failed run
with an item in the ``automation`` queue, and the other rules go on. A run's actions write their
events as ``automation:RUN_ID``; a rule triggered by such an event runs one level deeper, and at
``max_depth`` the chain stops, visible in the run, an event and an ``automation`` item. Every
step's run has a unique key (version, rule, trigger, step): nothing runs twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careops.automation.actions import ActionContext, ActionFailed, run_action
from careops.automation.conditions import Facts, as_time, evaluate
from careops.automation.facts import FactCache, event_facts
from careops.automation.rendering import RenderError, render_value
from careops.automation.store import Catalogue, catalogue_stamp, load_catalogue
from careops.automation.templates import Rule, Template
from careops.db import Database
from careops.domain.automation import (
    AutomationCursor,
    AutomationRun,
    AutomationTimer,
    ScheduleTick,
    WorkflowVersion,
)
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import BusinessEvent, new_id, utcnow
from careops.errors import CareopsError
from careops.orchestration.exception_queue import open_exception
from careops.yamldoc import parse_duration

QUEUE = "automation"
SCHEDULE_QUEUE = "integration"
ACTOR_PREFIX = "automation:"
EVENT_KINDS = ("event", "change")
TIMER_KINDS = ("after", "before")
MAX_TICKS = 1000  # a catch-up looks back this many ticks at most


@dataclass(frozen=True)
class Trigger:
    """What started a run: an event, a timer or a schedule tick, with its subject."""

    kind: str  # the event type, "timer" or "schedule"
    key: str  # e<event id>, t<timer id>, s<tick>
    event: dict[str, Any] | None
    event_id: int | None
    subject_type: str | None
    subject_id: str | None
    location_id: str | None
    case_id: str | None
    depth: int = 0
    cause_run_id: str | None = None


def _trigger_of(event: BusinessEvent, causes: dict[str, AutomationRun]) -> Trigger:
    cause = causes.get(event.actor[len(ACTOR_PREFIX) :]) if event.actor.startswith(ACTOR_PREFIX) else None
    return Trigger(
        event.type,
        f"e{event.id}",
        event_facts(event),
        event.id,
        event.subject_type,
        event.subject_id,
        event.location_id,
        event.case_id,
        cause.depth + 1 if cause else 0,
        cause.id if cause else None,
    )


class _Isolate(Exception):
    """A rule failed in a batch run without savepoints: run the batch again with them."""


class Engine:
    """One per worker; ``clock`` is the engine's now (a test or a drill moves it)."""

    def __init__(
        self,
        db: Database,
        *,
        max_depth: int = 5,
        clock: Callable[[], dt.datetime] = utcnow,
        worker: str = "local",
    ) -> None:
        self.db, self.max_depth, self.clock, self.worker = db, max_depth, clock, worker
        self.catalogue = Catalogue()

    def refresh(self, session: Session) -> Catalogue:
        """The catalogue, reloaded when a version was activated or a location added since."""
        if catalogue_stamp(session) != self.catalogue.stamp:
            self.catalogue = load_catalogue(session)
        return self.catalogue

    # --- events ---------------------------------------------------------------------------

    def matching(self, cache: FactCache, trigger: Trigger, now: dt.datetime) -> list[tuple[Template, Rule]]:
        """The active rules an event starts: indexed by event type and location, condition met."""
        found = []
        for template, name in self.catalogue.rules_for(trigger.kind, trigger.location_id, EVENT_KINDS):
            rule = template.rule(name)
            if rule.trigger.kind == "change" and not _changed(rule, trigger.event or {}):
                continue
            facts, _ = _facts(cache, template, trigger, now)
            if evaluate(rule.when, facts):
                found.append((template, rule))
        return found

    def process_events(self, limit: int = 500) -> int:
        """Handle up to ``limit`` sealed events past the cursor in one transaction; how many.

        A batch first runs without a savepoint per rule (a round trip each, most of the cost of a
        rule that writes one record); if any rule fails, the whole batch is rolled back and run
        again with them, so that only the failing rule's work is undone."""
        with self.db.sessions() as session:  # idle rounds take no write lock
            self.refresh(session)
            behind = session.scalar(select(func.max(BusinessEvent.seq))) or 0
            read = session.scalar(select(AutomationCursor.seq).where(AutomationCursor.name == "events"))
            if read is not None and behind <= read:
                return 0
        try:
            return self._batch(limit, behind, isolated=False)
        except _Isolate:
            return self._batch(limit, behind, isolated=True)

    def _batch(self, limit: int, behind: int, *, isolated: bool) -> int:
        with self.db.transaction() as session:
            cursor = session.get(AutomationCursor, "events", with_for_update=True)
            if cursor is None:  # a first start reads on from now: history is not replayed
                session.add(AutomationCursor(name="events", seq=behind))
                return 0
            if not self.catalogue.active:  # nothing to match: the cursor moves past them unread
                cursor.seq, cursor.updated_at = max(behind, cursor.seq), utcnow()
                return 0
            events = session.scalars(
                select(BusinessEvent)
                .where(BusinessEvent.seq > cursor.seq)
                .order_by(BusinessEvent.seq)
                .limit(limit)
            ).all()
            if not events:
                return 0
            now = self.clock()
            cache = FactCache(session)
            cache.prefetch(
                [(e.subject_type, e.subject_id) for e in events] + [("case", e.case_id) for e in events]
            )
            causes = _causes(session, events)
            waiting = _waiting(session, events)
            for event in events:
                trigger = _trigger_of(event, causes)
                for template, rule in self.matching(cache, trigger, now):
                    if trigger.depth > self.max_depth:
                        self._stop_loop(session, template, rule, trigger, now)
                    elif self._within_rate(session, template, rule, trigger, now):
                        self._execute(session, cache, template, rule, 0, trigger, now, isolated=isolated)
                timed = self.catalogue.rules_for(event.type, event.location_id, TIMER_KINDS)
                self._start_timers(session, timed, trigger, now)
                for timer in waiting.get((event.type, event.subject_id), []) + (
                    waiting.get((event.type, event.case_id), []) if event.case_id != event.subject_id else []
                ):
                    self._answer(session, cache, timer, trigger, now, isolated=isolated)
            try:
                session.flush()  # the batch's runs and records, a statement per table
            except IntegrityError as exc:
                raise _Isolate from exc
            cursor.seq, cursor.updated_at = events[-1].seq or cursor.seq, utcnow()
            return len(events)

    def _within_rate(
        self, session: Session, template: Template, rule: Rule, trigger: Trigger, now: dt.datetime
    ) -> bool:
        if rule.rate_limit is None:
            return True
        since = now - dt.timedelta(seconds=rule.rate_limit.per_seconds)
        runs = session.scalar(
            select(func.count()).where(
                AutomationRun.workflow == template.name,
                AutomationRun.rule == rule.name,
                AutomationRun.step == rule.steps[0].name,
                AutomationRun.started_at >= since,
                AutomationRun.status != "rate_limited",
            )
        )
        if (runs or 0) < rule.rate_limit.count:
            return True
        self._record(
            session, template, rule, "-", "-", trigger, "rate_limited", now, {"limit": rule.rate_limit.count}
        )
        return False

    def _stop_loop(
        self, session: Session, template: Template, rule: Rule, trigger: Trigger, now: dt.datetime
    ) -> None:
        chain = [f"{template.name}/{rule.name}"]
        run_id = trigger.cause_run_id
        while run_id is not None and len(chain) <= self.max_depth + 2:
            cause = session.get(AutomationRun, run_id)
            if cause is None:
                break
            chain.append(f"{cause.workflow}/{cause.rule}")
            run_id = cause.cause_run_id
        detail = {"depth": trigger.depth, "chain": chain}
        self._record(session, template, rule, "-", "-", trigger, "loop_stopped", now, detail)
        reason = f"automation_loop:{template.name}/{rule.name}"
        payload = {"rule": rule.name, **detail}
        _alert(
            session, QUEUE, reason, EventType.AUTOMATION_LOOP_STOPPED, template, trigger.location_id, payload
        )

    def _record(
        self,
        session: Session,
        template: Template,
        rule: Rule,
        step: str,
        action: str,
        trigger: Trigger,
        status: str,
        now: dt.datetime,
        detail: dict[str, Any],
    ) -> AutomationRun:
        run = AutomationRun(
            id=new_id(),
            run_key=_run_key(template, rule, trigger, step),
            workflow=template.name,
            content_hash=template.content_hash,
            rule=rule.name,
            step=step,
            action=action,
            trigger=trigger.kind[:64],
            event_id=trigger.event_id,
            subject_type=trigger.subject_type,
            subject_id=trigger.subject_id,
            location_id=trigger.location_id,
            depth=trigger.depth,
            cause_run_id=trigger.cause_run_id,
            status=status,
            detail=detail,
            started_at=now,
            finished_at=now,
        )
        session.add(run)
        return run

    def _execute(
        self,
        session: Session,
        cache: FactCache,
        template: Template,
        rule: Rule,
        start: int,
        trigger: Trigger,
        now: dt.datetime,
        *,
        isolated: bool = True,
    ) -> str:
        """Run the rule's steps from ``start``, ``isolated`` in a savepoint; 'done', 'waiting',
        'duplicate' or 'failed' (recorded, with an item for a person). Not isolated, a failure
        raises _Isolate: the caller runs its batch again isolated."""
        messages = any(s.action == "send_message" for s in rule.steps)
        facts, case = _facts(cache, template, trigger, now, with_patient=messages)
        current = rule.steps[start] if start < len(rule.steps) else None
        made: dict[str, Any] = {}  # what each step of this run made, for the steps after it
        try:
            with session.begin_nested() if isolated else nullcontext():
                for index in range(start, len(rule.steps)):
                    current = rule.steps[index]
                    run = self._record(
                        session, template, rule, current.name, current.action, trigger, "done", now, {}
                    )
                    if current.action == "wait":
                        run.status, run.detail = (
                            "waiting",
                            self._wait(session, template, rule, index, trigger, facts),
                        )
                        session.flush()
                        return "waiting"
                    if current.action == "start_workflow":
                        run.detail = self._start_workflow(session, current.args, trigger, now)
                    else:
                        ctx = ActionContext(
                            session,
                            facts,
                            ACTOR_PREFIX + run.id,
                            trigger.subject_type,
                            trigger.subject_id,
                            trigger.location_id,
                            case,
                            template.name,
                            rule.name,
                            made,
                        )
                        run.detail = run_action(current.action, ctx, current.args)
                        made[current.name] = run.detail
                if isolated:
                    session.flush()
        except IntegrityError as exc:
            if not isolated:
                raise _Isolate from exc
            return (
                "duplicate"
                if self._ran(session, template, rule, trigger, current.name if current else "-")
                else "failed"
            )
        except (ActionFailed, RenderError, CareopsError, ValueError, LookupError) as exc:
            if not isolated:
                raise _Isolate from exc
            self._failed(session, template, rule, current.name if current else "-", trigger, now, exc)
            return "failed"
        return "done"

    def _ran(self, session: Session, template: Template, rule: Rule, trigger: Trigger, step: str) -> bool:
        key = _run_key(template, rule, trigger, step)
        return session.scalar(select(AutomationRun.id).where(AutomationRun.run_key == key)) is not None

    def _failed(
        self,
        session: Session,
        template: Template,
        rule: Rule,
        step: str,
        trigger: Trigger,
        now: dt.datetime,
        exc: Exception,
    ) -> None:
        """A failed run, an item in the automation queue (one open per rule) and the event."""
        message = str(exc)[:300] if isinstance(exc, ActionFailed | RenderError | CareopsError) else ""
        detail = {"error": type(exc).__name__, "message": message}
        self._record(
            session,
            template,
            rule,
            step,
            "-",
            replace(trigger, key=f"{trigger.key}!failed"),
            "failed",
            now,
            detail,
        )
        reason = f"automation_failed:{template.name}/{rule.name}"
        payload = {"rule": rule.name, "step": step, "error": detail["error"]}
        _alert(session, QUEUE, reason, EventType.AUTOMATION_FAILED, template, trigger.location_id, payload)

    # --- timers and waits -----------------------------------------------------------------

    def _start_timers(
        self, session: Session, template_rules: list[tuple[Template, str]], trigger: Trigger, now: dt.datetime
    ) -> None:
        for template, name in template_rules:
            rule = template.rule(name)
            delay = dt.timedelta(seconds=rule.trigger.delay_seconds)
            base = (trigger.event or {}).get("occurred_at", now)
            if rule.trigger.kind == "before":
                anchor = as_time(Facts({"event": trigger.event or {}}, now).get(rule.trigger.anchor or ""))
                if anchor is None:
                    continue
                base, delay = anchor, -delay
            self._timer(session, template, rule.name, 0, None, None, trigger, base + delay)

    def _timer(
        self,
        session: Session,
        template: Template,
        rule: str,
        step: int,
        awaits: str | None,
        on_event: str | None,
        trigger: Trigger,
        due: dt.datetime,
    ) -> AutomationTimer:
        timer = AutomationTimer(
            id=new_id(),
            timer_key=f"{template.content_hash[:16]}:{rule}:{step}:{trigger.key}"[:200],
            workflow=template.name,
            content_hash=template.content_hash,
            rule=rule,
            next_step=step,
            awaits=awaits,
            on_event=on_event,
            event_id=trigger.event_id,
            subject_type=trigger.subject_type or "workflow",
            subject_id=trigger.subject_id or template.name[:32],
            location_id=trigger.location_id,
            depth=trigger.depth,
            due_at=due,
            status="pending",
        )
        session.add(timer)
        return timer

    def _wait(
        self, session: Session, template: Template, rule: Rule, index: int, trigger: Trigger, facts: Any
    ) -> dict[str, Any]:
        args = render_value(rule.steps[index].args, dict(facts.values))
        due = facts.now + parse_duration(args["timeout"], ())
        awaits = args.get("event")
        timer = self._timer(
            session, template, rule.name, index + 1, awaits, args.get("on_event", "stop"), trigger, due
        )
        return {"timer_id": timer.id, "due_at": due.isoformat(), "awaits": awaits}

    def _start_workflow(
        self, session: Session, args: dict[str, Any], trigger: Trigger, now: dt.datetime
    ) -> dict[str, Any]:
        target = self.catalogue.active.get(str(args["workflow"]))
        if target is None or not any(r.name == args["rule"] for r in target.rules):
            raise ActionFailed(f"no active workflow rule {args['workflow']}/{args['rule']}")
        timer = self._timer(session, target, str(args["rule"]), 0, None, None, trigger, now)
        return {"timer_id": timer.id, "workflow": target.name}

    def _answer(
        self,
        session: Session,
        cache: FactCache,
        timer: AutomationTimer,
        trigger: Trigger,
        now: dt.datetime,
        *,
        isolated: bool,
    ) -> None:
        """The awaited event came before the timeout: stop there, or go on (``on_event``)."""
        if timer.status != "pending":
            return
        timer.status, timer.fired_at = "answered", now
        template = self.catalogue.effective_at(timer.content_hash, timer.location_id)
        if timer.on_event == "continue" and template is not None:
            carried = replace(trigger, key=f"t{timer.id}", depth=max(trigger.depth, timer.depth))
            rule = template.rule(timer.rule)
            self._execute(session, cache, template, rule, timer.next_step, carried, now, isolated=isolated)

    def sweep_timers(self, limit: int = 200) -> int:
        """Fire up to ``limit`` timers due now (claimed, so each fires once); how many."""
        now = self.clock()
        pending = (AutomationTimer.status == "pending", AutomationTimer.due_at <= now)
        with self.db.sessions() as session:  # idle rounds take no write lock
            self.refresh(session)
            if session.scalar(select(AutomationTimer.id).where(*pending).limit(1)) is None:
                return 0
        with self.db.transaction() as session:
            due = session.scalars(
                select(AutomationTimer)
                .where(*pending)
                .order_by(AutomationTimer.due_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            cache = FactCache(session)
            cache.prefetch([(t.subject_type, t.subject_id) for t in due])
            ids = [t.event_id for t in due if t.event_id]
            events = {
                e.id: e for e in session.scalars(select(BusinessEvent).where(BusinessEvent.id.in_(ids)))
            }
            for timer in due:
                timer.status, timer.fired_at = "fired", now
                template = (
                    self.catalogue.effective_at(timer.content_hash, timer.location_id)
                    if (timer.content_hash in self.catalogue.versions)
                    else None
                )
                if template is None or not any(r.name == timer.rule for r in template.rules):
                    timer.status = "cancelled"
                    continue
                rule = template.rule(timer.rule)
                event = events.get(timer.event_id) if timer.event_id else None
                trigger = Trigger(
                    "timer",
                    f"t{timer.id}",
                    event_facts(event) if event else None,
                    timer.event_id,
                    timer.subject_type,
                    timer.subject_id,
                    timer.location_id,
                    event.case_id if event else None,
                    timer.depth,
                )
                if timer.next_step == 0 and timer.awaits is None:
                    facts, _ = _facts(cache, template, trigger, now)
                    if not evaluate(rule.when, facts):
                        continue
                self._execute(session, cache, template, rule, timer.next_step, trigger, now)
            return len(due)

    # --- schedules ------------------------------------------------------------------------

    def run_schedules(self, grace: dt.timedelta = dt.timedelta(minutes=2)) -> int:
        """Fire every scheduled rule's ticks due since its last one, by its catch-up policy:
        ``all`` runs each missed tick, ``latest`` the newest (the others recorded skipped),
        ``skip`` only a tick within ``grace`` of now. How many ran."""
        now = self.clock()
        with self.db.sessions() as session:
            self.refresh(session)
            plans = []
            for template, name in self.catalogue.schedules():
                schedule = f"{template.name}/{name}"
                last = session.scalar(
                    select(func.max(ScheduleTick.tick_at)).where(ScheduleTick.schedule == schedule)
                )
                since = last or session.scalar(
                    select(WorkflowVersion.activated_at).where(
                        WorkflowVersion.content_hash == template.content_hash,
                        WorkflowVersion.name == template.name,
                    )
                )
                plans.append((template, template.rule(name), schedule, since or now))
        ran = 0
        for template, rule, schedule, since in plans:
            ticks = _ticks(rule, since, now)
            if not ticks:
                continue
            policy = rule.trigger.catch_up
            run = (
                ticks
                if policy == "all"
                else [t for t in ticks[-1:] if policy == "latest" or now - t <= grace]
            )
            skipped = [t for t in ticks if t not in run]
            if skipped:
                self._skip(template, rule, schedule, skipped)
            for tick in run:
                ran += self._tick(template, rule, schedule, tick, now)
        return ran

    def _skip(self, template: Template, rule: Rule, schedule: str, ticks: list[dt.datetime]) -> None:
        try:
            with self.db.transaction() as session:
                for tick in ticks:
                    session.add(
                        ScheduleTick(
                            schedule=schedule,
                            tick_at=tick,
                            status="skipped",
                            worker=self.worker,
                            finished_at=utcnow(),
                        )
                    )
                session.flush()
                payload = {
                    "rule": rule.name,
                    "ticks": len(ticks),
                    "first": ticks[0].isoformat(),
                    "last": ticks[-1].isoformat(),
                    "policy": rule.trigger.catch_up,
                }
                record_events(
                    session,
                    Event(
                        EventType.SCHEDULE_SKIPPED,
                        "workflow",
                        template.name[:32],
                        ACTOR_PREFIX + "scheduler",
                        payload=payload,
                    ),
                )
        except IntegrityError:
            return  # another worker recorded them

    def _tick(
        self, template: Template, rule: Rule, schedule: str, tick: dt.datetime, now: dt.datetime
    ) -> int:
        """Claim the tick (its primary key: one worker wins) and run the rule in the same transaction."""
        try:
            with self.db.transaction() as session:  # run_schedules refreshed the catalogue
                claim = ScheduleTick(
                    schedule=schedule, tick_at=tick, status="running", worker=self.worker, started_at=now
                )
                session.add(claim)
                session.flush()
                trigger = Trigger(
                    "schedule",
                    f"s{tick:%Y%m%dT%H%M%S}",
                    {"tick_at": tick, "type": "schedule"},
                    None,
                    None,
                    None,
                    None,
                    None,
                )
                outcome = self._execute(session, FactCache(session), template, rule, 0, trigger, now)
                claim.status, claim.finished_at = ("failed" if outcome == "failed" else "ok"), utcnow()
                if outcome == "failed":
                    claim.error = f"rule {rule.name} failed (see its run)"
                    payload = {"rule": rule.name, "tick_at": tick.isoformat()}
                    _alert(session, SCHEDULE_QUEUE, f"schedule_failed:{schedule}", EventType.SCHEDULE_FAILED,
                           template, None, payload)  # fmt: skip
                return 1
        except IntegrityError:
            return 0  # another worker has this tick


def _run_key(template: Template, rule: Rule, trigger: Trigger, step: str) -> str:
    """What makes a step's run once: the version, the rule, the trigger and the step."""
    return f"{template.content_hash[:16]}:{rule.name}:{trigger.key}:{step}"[:200]


def _alert(
    session: Session,
    queue: str,
    reason: str,
    kind: EventType,
    template: Template,
    location_id: str | None,
    payload: dict[str, Any],
) -> None:
    """What a person must see about a workflow: one open item per reason in ``queue`` and the event."""
    actor = ACTOR_PREFIX + "engine"
    open_exception(
        session, queue, [reason[:120]], actor=actor, location_id=location_id, dedupe_key=reason[:128]
    )
    workflow = Event(kind, "workflow", template.name[:32], actor, location_id=location_id, payload=payload)
    record_events(session, workflow)


def _facts(
    cache: FactCache, template: Template, trigger: Trigger, now: dt.datetime, with_patient: bool = False
) -> tuple[Facts, Any]:
    """What the rule reads about the trigger's event, subject, case and location."""
    subject = (trigger.subject_type, trigger.subject_id)
    return cache.facts(
        template, now, trigger.event, subject, trigger.location_id, trigger.case_id, with_patient
    )


def _ticks(rule: Rule, since: dt.datetime, now: dt.datetime) -> list[dt.datetime]:
    zone = ZoneInfo(rule.trigger.timezone)
    moments = croniter(rule.trigger.cron, since.astimezone(zone))
    found: list[dt.datetime] = []
    while len(found) < MAX_TICKS:
        tick = moments.get_next(dt.datetime).astimezone(dt.UTC)
        if tick > now:
            break
        found.append(tick)
    return found


def _changed(rule: Rule, event: dict[str, Any]) -> bool:
    payload = event.get("payload") or {}
    return (rule.trigger.field_from in (None, payload.get("from"))) and (
        rule.trigger.field_to in (None, payload.get("to"))
    )


def _causes(session: Session, events: Any) -> dict[str, AutomationRun]:
    ids = {e.actor[len(ACTOR_PREFIX) :] for e in events if e.actor.startswith(ACTOR_PREFIX)}
    if not ids:
        return {}
    return {run.id: run for run in session.scalars(select(AutomationRun).where(AutomationRun.id.in_(ids)))}


def _waiting(session: Session, events: Any) -> dict[tuple[str, str | None], list[AutomationTimer]]:
    """Pending waits for the batch's event types about its subjects (or their cases)."""
    subjects = {e.subject_id for e in events} | {e.case_id for e in events if e.case_id}
    types = {e.type for e in events}
    found: dict[tuple[str, str | None], list[AutomationTimer]] = {}
    rows = session.scalars(
        select(AutomationTimer)
        .where(
            AutomationTimer.status == "pending",
            AutomationTimer.awaits.in_(types),
            AutomationTimer.subject_id.in_(subjects),
        )
        .with_for_update(skip_locked=True)
    )
    for timer in rows:
        found.setdefault((timer.awaits or "", timer.subject_id), []).append(timer)
    return found
