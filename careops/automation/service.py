"""What the API, the console and the CLI read and do with workflows: the templates with their
versions, a location's effective workflow with its graph, recent rule runs, failing scheduled
actions, dry runs against the database (rolled back), activation from files."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from careops.automation.facts import FactCache
from careops.automation.store import (
    activate,
    load_catalogue,
    refuse_invalid,
    stored_text,
    version_view,
    versions_of,
)
from careops.automation.templates import Template, TemplateError, effective, load_text
from careops.automation.tooling import graph, plan
from careops.db import Database
from careops.domain.automation import AutomationRun, AutomationTimer, ScheduleTick, WorkflowVersion
from careops.domain.models import Location, utcnow
from careops.errors import NotFound, ValidationFailed
from careops.governance.scoping import LocationScope
from careops.orchestration.locations import location_named


def list_workflows(db: Database) -> list[dict[str, Any]]:
    with db.sessions() as session:
        rows = session.scalars(
            select(WorkflowVersion).where(WorkflowVersion.active.is_(True)).order_by(WorkflowVersion.name)
        ).all()
        found = []
        for version in rows:
            template = load_text(version.content, version.name)
            found.append(
                {
                    **version_view(version),
                    "description": template.description,
                    "run_as": template.run_as,
                    "rules": [
                        {
                            "name": r.name,
                            "trigger": r.trigger.describe(),
                            "steps": [s.action for s in r.steps],
                        }
                        for r in template.rules
                    ],
                    "overlays": [{"name": o.name, "locations": list(o.locations)} for o in template.overlays],
                }
            )
        return found


def _effective(
    session: Session, text: str, name: str, location: str | None, scope: LocationScope
) -> Template:
    template = load_text(text, name)
    if location is None:
        return template
    place = location_named(session, location, scope)
    return effective(template, place.slug, list(place.groups or []))


def workflow_detail(db: Database, name: str, location: str | None, scope: LocationScope) -> dict[str, Any]:
    """The active version (as it runs at ``location``, when named), its graph and every version."""
    text, version = stored_text(db, name)
    with db.sessions() as session:
        template = _effective(session, text, name, location, scope)
    return {
        **version_view(version),
        "location": location,
        "overlay": template.overlay,
        "parameters": template.parameters,
        "sla": template.sla,
        "run_as": template.run_as,
        "effective": template.data,
        "graph": graph(template),
        "versions": versions_of(db, name),
    }


def run_view(run: AutomationRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "workflow": run.workflow,
        "version": run.content_hash[:12],
        "rule": run.rule,
        "step": run.step,
        "action": run.action,
        "trigger": run.trigger,
        "event_id": run.event_id,
        "subject_type": run.subject_type,
        "subject_id": run.subject_id,
        "depth": run.depth,
        "status": run.status,
        "detail": run.detail,
        "started_at": run.started_at.isoformat(),
    }


def recent_runs(
    db: Database,
    scope: LocationScope,
    *,
    workflow: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first, in the caller's locations (runs of no location, such as schedules, for all)."""
    with db.sessions() as session:
        query = select(AutomationRun).order_by(AutomationRun.started_at.desc(), AutomationRun.id.desc())
        if workflow:
            query = query.where(AutomationRun.workflow == workflow)
        if status:
            query = query.where(AutomationRun.status == status)
        if scope.ids is not None:
            query = query.where(
                AutomationRun.location_id.in_(scope.ids) | AutomationRun.location_id.is_(None)
            )
        return [run_view(r) for r in session.scalars(query.limit(min(limit, 500)))]


def failing_schedules(db: Database, days: int = 7) -> list[dict[str, Any]]:
    """Scheduled-action ticks that failed, or are still running an hour on, in the last ``days``."""
    since = utcnow() - dt.timedelta(days=days)
    stale = utcnow() - dt.timedelta(hours=1)
    with db.sessions() as session:
        rows = session.scalars(
            select(ScheduleTick)
            .where(
                ScheduleTick.tick_at >= since,
                (ScheduleTick.status == "failed")
                | ((ScheduleTick.status == "running") & (ScheduleTick.started_at < stale)),
            )
            .order_by(ScheduleTick.tick_at.desc())
            .limit(200)
        ).all()
        return [
            {
                "schedule": t.schedule,
                "tick_at": t.tick_at.isoformat(),
                "status": t.status,
                "error": t.error,
                "worker": t.worker,
            }
            for t in rows
        ]


def dry_run(
    db: Database, name: str | None, event: dict[str, Any], location: str | None, scope: LocationScope
) -> list[dict[str, Any]]:
    """Which active rules ``event`` would start and what their steps would do, reading the
    database for its records but changing nothing (the session is rolled back)."""
    if not isinstance(event.get("type"), str):
        raise ValidationFailed("the event needs a type (referral.received, case.created, ...)")
    with db.sessions() as session:
        catalogue = load_catalogue(session)
        templates = [t for n, t in catalogue.active.items() if name in (None, n)]
        if name is not None and not templates:
            raise NotFound(f"no active workflow {name!r}")
        place: Location | None = location_named(session, location, scope) if location else None
        if not templates:
            return []
        subject = (event.get("subject_type"), event.get("subject_id"))
        place_id, slug = (place.id, place.slug) if place else (None, None)
        facts, _ = FactCache(session).facts(
            templates[0], utcnow(), event, subject, place_id, event.get("case_id"), with_patient=True
        )
        planned = plan(templates, event, facts, slug, list(place.groups or []) if place else [])
        session.rollback()
    return [vars(p) for p in planned]


def activate_text(db: Database, text: str, *, actor: str, reason: str) -> dict[str, Any]:
    """Validate one template's YAML (with the active ones, for cycles between them) and make it
    its name's active version; 422 naming the line of what is wrong."""
    try:
        template = load_text(text, "<request>")
    except TemplateError as exc:
        raise ValidationFailed(str(exc), errors=[{"field": "content", "message": str(exc)}]) from exc
    with db.transaction() as session:
        others = [t for n, t in load_catalogue(session).active.items() if n != template.name]
        refuse_invalid([*others, template], "content")
        done = activate(session, template, text, actor=actor, reason=reason)
    return {
        "name": done.name,
        "version": done.version,
        "content_hash": done.content_hash,
        "changed": done.changed,
    }


def run_counts(db: Database, hours: int = 24) -> dict[str, Any]:
    """Rule runs per outcome and scheduled-action ticks per outcome in the last ``hours`` (the
    metrics: a failing scheduled action shows here)."""
    since = utcnow() - dt.timedelta(hours=hours)
    with db.sessions() as session:
        runs = dict(
            session.execute(
                select(AutomationRun.status, func.count())
                .where(AutomationRun.started_at >= since)
                .group_by(AutomationRun.status)
            ).all()
        )
        ticks = dict(
            session.execute(
                select(ScheduleTick.status, func.count())
                .where(ScheduleTick.tick_at >= since)
                .group_by(ScheduleTick.status)
            ).all()
        )
        timers = session.scalar(select(func.count()).where(AutomationTimer.status == "pending")) or 0
    return {"runs": runs, "ticks": ticks, "pending_timers": timers}
