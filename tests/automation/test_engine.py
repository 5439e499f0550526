"""The rule engine on SQLite and PostgreSQL, driven through the API with a controllable clock:
shipped templates acting on real events (triage deadline, replenishment), waits answered or timed
out, loop protection with a visible chain, one rule's failure isolated, rate limits, scheduled
actions with their catch-up policies fired once per tick by two engines, and pinned versions."""

from __future__ import annotations

import datetime as dt
import itertools
import textwrap
import threading
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from careops.approvals.store import activate_directory as activate_policies
from careops.approvals.store import shipped_directory as policies_directory
from careops.automation.engine import Engine
from careops.automation.store import activate, activate_directory, shipped_directory
from careops.automation.templates import load_text
from careops.db import Database
from careops.domain.approvals import ApprovalRequest
from careops.domain.automation import AutomationRun, AutomationTimer, QueuedMessage, ScheduleTick
from careops.domain.models import BusinessEvent, ExceptionItem, Task, utcnow
from careops.domain.stock import Replenishment
from careops.governance.audit import seal_all
from careops.settings import Settings
from tests.conftest import referral


class Clock:
    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset


def _engine(db: Database, clock: Clock | None = None, **kw: Any) -> Engine:
    return Engine(db, clock=clock or Clock(), **kw)


def _drain(engine: Engine, settings: Settings, rounds: int = 20) -> None:
    """Seal what was written and let the engine read it, until nothing new comes."""
    for _ in range(rounds):
        seal_all(engine.db, settings.secret_key)
        if not engine.process_events() and not engine.sweep_timers():
            seal_all(engine.db, settings.secret_key)
            if not engine.process_events():
                return


def go_live(db: Database) -> None:
    """The shipped approval policies, then the shipped workflows (which ask for approvals under them)."""
    activate_policies(db, policies_directory(), actor="test", reason="go live")
    activate_directory(db, shipped_directory(), actor="test", reason="go live")


def _use(db: Database, text: str) -> None:
    template = load_text(textwrap.dedent(text))
    with db.transaction() as session:
        activate(session, template, textwrap.dedent(text), actor="test", reason="test")


def _count(db: Database, model: Any, *where: Any) -> int:
    with db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _case(client: TestClient) -> str:
    answer = client.post("/api/v1/referrals", json=referral())
    assert answer.status_code == 201, answer.text
    return str(answer.json()["case_id"])


def test_the_shipped_triage_deadline_escalates_an_untriaged_case_once_and_spares_a_triaged_one(
    client: TestClient, db: Database, settings: Settings
) -> None:
    go_live(db)
    clock = Clock()
    engine = _engine(db, clock)
    _drain(engine, settings)  # the demo's history: read, nothing due
    late, triaged = _case(client), _case(client)
    assert client.post(f"/api/v1/cases/{triaged}/triage", json={"urgency": "urgent"}).status_code == 200
    _drain(engine, settings)
    assert _count(db, AutomationTimer, AutomationTimer.subject_id.in_([late, triaged])) == 2
    before = _count(db, ExceptionItem, ExceptionItem.case_id == late, ExceptionItem.queue == "triage")
    clock.offset = dt.timedelta(hours=3)
    engine.sweep_timers()
    assert _count(db, ExceptionItem, ExceptionItem.case_id == late, ExceptionItem.queue == "triage") == before
    clock.offset = dt.timedelta(hours=4, minutes=1)
    assert engine.sweep_timers() >= 2
    assert engine.sweep_timers() == 0  # fired once
    assert _count(db, ExceptionItem, ExceptionItem.case_id == late, ExceptionItem.queue == "triage",
                  ExceptionItem.reason_codes.is_not(None)) == 1  # fmt: skip
    assert _count(db, ExceptionItem, ExceptionItem.case_id == triaged, ExceptionItem.queue == "triage") == 0
    runs = _count(db, AutomationRun, AutomationRun.subject_id == late, AutomationRun.status == "done")
    assert runs == 1


def test_stock_below_its_minimum_drafts_a_replenishment_routed_for_approval(
    client: TestClient, db: Database, settings: Settings
) -> None:
    go_live(db)
    engine = _engine(db)
    _drain(engine, settings)
    used = client.post("/api/v1/stock/moves", json={"location": "south", "item": "GLOVES-M",
                                                    "kind": "consumption", "quantity": 260})  # fmt: skip
    assert used.status_code == 201, used.text
    _drain(engine, settings)
    with db.sessions() as session:
        [request] = session.scalars(
            select(Replenishment).where(Replenishment.requested_by.like("automation:%"))
        ).all()
        assert (
            request.lines[0]["item"] == "GLOVES-M" and request.status == "requested"
        )  # submitted for approval
        assert request.lines[0]["quantity"] == 50 * 2 - 40  # back to twice the minimum
        assert request.urgency == "routine"
        approval = session.scalars(select(ApprovalRequest)).one()
        assert (approval.subject_id, approval.policy, approval.matched) == (
            request.id,
            "replenishment",
            ["small"],
        )


def test_a_wait_ends_early_when_its_event_comes_and_goes_on_at_its_timeout(
    client: TestClient, db: Database, settings: Settings
) -> None:
    _use(
        db,
        """
        name: wait-for-triage
        version: "1"
        owner: intake_coordinator
        run_as: intake_coordinator
        rules:
          - name: chase
            on: {event: case.created}
            steps:
              - {name: wait, action: wait, with: {event: case.triaged, timeout: 1h}}
              - {name: escalate, action: open_exception, with: {queue: triage, reason: not_triaged}}
        """,
    )
    clock = Clock()
    engine = _engine(db, clock)
    _drain(engine, settings)
    answered, timed_out = _case(client), _case(client)
    _drain(engine, settings)
    assert client.post(f"/api/v1/cases/{answered}/triage", json={"urgency": "routine"}).status_code == 200
    _drain(engine, settings)
    with db.sessions() as session:
        states = dict(session.execute(select(AutomationTimer.subject_id, AutomationTimer.status)).all())
    assert states == {answered: "answered", timed_out: "pending"}
    clock.offset = dt.timedelta(hours=1, seconds=1)
    _drain(engine, settings)
    items = _count(db, ExceptionItem, ExceptionItem.queue == "triage",
                   ExceptionItem.case_id.in_([answered, timed_out]))  # fmt: skip
    assert items == 1
    assert _count(db, ExceptionItem, ExceptionItem.case_id == timed_out, ExceptionItem.queue == "triage") == 1


PING_PONG = """
name: ping-pong
version: "1"
owner: intake_coordinator
run_as: intake_coordinator
rules:
  - name: serve
    on: {event: case.created}
    steps: [{name: task, action: create_task, with: {kind: ping}}]
  - name: ping
    on: {event: task.created}
    when: {event.payload.kind: pong}
    steps: [{name: task, action: create_task, with: {kind: ping}}]
  - name: pong
    on: {event: task.created}
    when: {event.payload.kind: ping}
    steps: [{name: task, action: create_task, with: {kind: pong}}]
"""


def test_two_rules_that_trigger_each_other_stop_at_the_depth_limit_with_the_chain_visible(
    client: TestClient, db: Database, settings: Settings
) -> None:
    _use(db, PING_PONG)
    engine = _engine(db, max_depth=4)
    _drain(engine, settings)
    case_id = _case(client)
    _drain(engine, settings, rounds=40)
    assert _count(db, Task, Task.case_id == case_id) == 5  # depths 0 to 4
    with db.sessions() as session:
        stopped = session.scalars(select(AutomationRun).where(AutomationRun.status == "loop_stopped")).one()
        chain = stopped.detail["chain"]  # the stopped rule, then each run that caused the next
        assert stopped.depth == 5 and len(chain) == 6 and chain[-1] == "ping-pong/serve"
        assert all({a, b} == {"ping-pong/ping", "ping-pong/pong"} for a, b in itertools.pairwise(chain[:-1]))
        event = session.scalars(
            select(BusinessEvent).where(BusinessEvent.type == "automation.loop_stopped")
        ).one()
        assert event.payload["depth"] == 5
        item = session.scalars(select(ExceptionItem).where(ExceptionItem.queue == "automation")).one()
        assert item.reason_codes == [f"automation_loop:{chain[0]}"]


def test_one_rules_failure_is_isolated_recorded_and_queued_while_the_others_run(
    client: TestClient, db: Database, settings: Settings
) -> None:
    _use(
        db,
        """
        name: mixed
        version: "1"
        owner: intake_coordinator
        run_as: intake_coordinator
        rules:
          - name: broken
            on: {event: case.created}
            steps:
              - {name: first, action: create_task, with: {kind: undone}}
              - {name: close, action: transition, with: {action: close}}
          - name: fine
            on: {event: case.created}
            steps: [{name: task, action: create_task, with: {kind: done}}]
        """,
    )
    engine = _engine(db)
    _drain(engine, settings)
    case_id = _case(client)
    _drain(engine, settings)
    with db.sessions() as session:
        kinds = set(session.scalars(select(Task.kind).where(Task.case_id == case_id)))
        assert kinds == {"done"}  # the broken rule's first step was undone with it
        failed = session.scalars(select(AutomationRun).where(AutomationRun.status == "failed")).one()
        assert (failed.rule, failed.step, failed.detail["error"]) == ("broken", "close", "InvalidTransition")
        item = session.scalars(select(ExceptionItem).where(ExceptionItem.queue == "automation")).one()
        assert item.reason_codes == ["automation_failed:mixed/broken"]


def test_a_rate_limit_holds_a_rule_to_its_count_per_window(
    client: TestClient, db: Database, settings: Settings
) -> None:
    _use(
        db,
        """
        name: limited
        version: "1"
        owner: intake_coordinator
        run_as: intake_coordinator
        rules:
          - name: once
            on: {event: case.created}
            rate_limit: {count: 1, per: 1h}
            steps: [{name: task, action: create_task, with: {kind: limited}}]
        """,
    )
    engine = _engine(db)
    _drain(engine, settings)
    _case(client), _case(client)
    _drain(engine, settings)
    assert _count(db, Task, Task.kind == "limited") == 1
    assert _count(db, AutomationRun, AutomationRun.status == "rate_limited") == 1


def _schedule(db: Database, catch_up: str) -> None:
    _use(
        db,
        f"""
        name: every-ten
        version: "1"
        owner: operations_manager
        run_as: operations_manager
        rules:
          - name: tick
            on: {{schedule: {{cron: "*/10 * * * *", catch_up: {catch_up}}}}}
            steps:
              - name: note
                action: send_message
                with: {{to: "role:operations_manager", subject: tick, body: tick}}
        """,
    )


def test_a_scheduled_action_missed_for_an_hour_catches_up_every_tick_under_all(db: Database) -> None:
    _schedule(db, "all")
    clock = Clock()
    engine = _engine(db, clock)
    clock.offset = dt.timedelta(hours=1)
    assert engine.run_schedules() in (5, 6, 7)  # every ten minutes for an hour
    assert engine.run_schedules() == 0
    assert _count(db, QueuedMessage, QueuedMessage.subject == "tick") == _count(
        db, ScheduleTick, ScheduleTick.status == "ok"
    )


def test_under_latest_only_the_newest_missed_tick_runs_and_the_others_are_recorded_skipped(
    db: Database,
) -> None:
    _schedule(db, "latest")
    clock = Clock()
    engine = _engine(db, clock)
    clock.offset = dt.timedelta(hours=1)
    assert engine.run_schedules() == 1
    assert _count(db, ScheduleTick, ScheduleTick.status == "skipped") >= 4
    with db.sessions() as session:
        skipped = session.scalars(select(BusinessEvent).where(BusinessEvent.type == "schedule.skipped")).one()
        assert skipped.payload["policy"] == "latest" and skipped.payload["ticks"] >= 4


def test_two_engines_never_fire_the_same_tick_twice(db: Database) -> None:
    _schedule(db, "all")
    clock = Clock()
    clock.offset = dt.timedelta(hours=2)
    engines = [_engine(db, clock, worker=f"w{n}") for n in range(2)]
    fired: list[int] = []
    threads = [threading.Thread(target=lambda e=e: fired.append(e.run_schedules())) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ticks = _count(db, ScheduleTick, ScheduleTick.status == "ok")
    assert sum(fired) == ticks and 11 <= ticks <= 13
    assert _count(db, QueuedMessage, QueuedMessage.subject == "tick") == ticks


def test_a_waiting_timer_keeps_the_version_it_started_with(
    client: TestClient, db: Database, settings: Settings
) -> None:
    first = """
        name: versioned
        version: "{v}"
        owner: intake_coordinator
        run_as: intake_coordinator
        rules:
          - name: later
            on: {{after: {{event: case.created, delay: 1h}}}}
            steps: [{{name: task, action: create_task, with: {{kind: "{kind}"}}}}]
        """
    _use(db, first.format(v=1, kind="from-v1"))
    clock = Clock()
    engine = _engine(db, clock)
    _drain(engine, settings)
    case_id = _case(client)
    _drain(engine, settings)
    _use(db, first.format(v=2, kind="from-v2"))
    clock.offset = dt.timedelta(hours=1, seconds=1)
    _drain(engine, settings)
    with db.sessions() as session:
        assert list(session.scalars(select(Task.kind).where(Task.case_id == case_id))) == ["from-v1"]
        activated = session.scalars(
            select(BusinessEvent).where(BusinessEvent.type == "workflow.activated")
        ).all()
        assert [e.payload["version"] for e in activated] == ["1", "2"] and activated[1].payload[
            "previous_hash"
        ]


def test_shipped_templates_load_the_demo_and_write_every_run_once(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    go_live(db)
    engine = _engine(db)
    for _ in range(3):
        _case(client)
    _drain(engine, settings)
    with db.sessions() as session:
        keys = session.scalars(select(AutomationRun.run_key)).all()
    assert len(keys) == len(set(keys))
    engine.catalogue.stamp = ()  # a second worker starting afresh reads nothing twice
    assert engine.process_events() == 0
