"""Template versions in the database: activation (audited, with who and why), the catalogue the
engine runs (every stored version by hash, the active one per name) and the shipped templates'
directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from careops.approvals.store import is_active as policy_active
from careops.automation.templates import Template, effective, load_text
from careops.automation.tooling import validate
from careops.db import Database
from careops.domain.automation import WorkflowVersion
from careops.domain.events import Event, EventType, record_events
from careops.domain.models import Location
from careops.domain.versions import Activation, activate_version
from careops.errors import NotFound, ValidationFailed

SHIPPED = Path(__file__).resolve().parents[2] / "workflows"


def shipped_directory() -> Path:
    """``workflows/`` of the source tree (the shipped templates)."""
    return SHIPPED


def refuse_invalid(templates: list[Template], field: str) -> None:
    """422 with every problem the validator finds across ``templates``."""
    problems = validate(templates)
    if problems:
        errors = [{"field": field, "message": p} for p in problems]
        raise ValidationFailed(f"the templates do not validate: {problems[0]}", errors=errors)


def activate(session: Session, template: Template, text: str, *, actor: str, reason: str) -> Activation:
    """In the caller's transaction: store the template's version (once per content hash) and make
    it the active one of its name, with ``workflow.activated``. Runs already started keep theirs.
    A template asking for approvals needs the policies it names active (422 saying which)."""
    for rule in template.rules:
        for step in rule.steps:
            policy = step.args.get("policy") if step.action == "request_approval" else None
            if isinstance(policy, str) and "{{" not in policy and not policy_active(session, policy):
                raise ValidationFailed(
                    f"{template.name} rule {rule.name} step {step.name} asks for approvals under the policy "
                    f"{policy!r}, which is not active: activate it first (careops approvals activate)"
                )
    return activate_version(
        session,
        WorkflowVersion,
        template,
        text,
        actor=actor,
        reason=reason,
        event=EventType.WORKFLOW_ACTIVATED,
        subject_type="workflow",
    )


def deactivate(db: Database, name: str, *, actor: str, reason: str) -> None:
    with db.transaction() as session:
        current = session.scalars(
            select(WorkflowVersion).where(WorkflowVersion.name == name, WorkflowVersion.active.is_(True))
        ).first()
        if current is None:
            raise NotFound(f"no active workflow {name!r}")
        current.active = False
        payload = {"name": name, "content_hash": current.content_hash, "reason": reason[:200]}
        record_events(
            session, Event(EventType.WORKFLOW_DEACTIVATED, "workflow", current.id, actor, payload=payload)
        )


def activate_directory(db: Database, directory: Path, *, actor: str, reason: str) -> list[Activation]:
    """Validate every template in ``directory``, then activate them all: one bad file activates none."""
    texts = {path: path.read_text(encoding="utf-8") for path in sorted(directory.glob("*.yaml"))}
    templates = [(load_text(text, str(path)), text) for path, text in texts.items()]
    refuse_invalid([t for t, _ in templates], "workflows")
    with db.transaction() as session:
        return [activate(session, t, text, actor=actor, reason=reason) for t, text in templates]


@dataclass
class Catalogue:
    """What the engine runs: every stored version by hash (timers and waits keep theirs), the
    active ones, and per location its effective workflows, worked out once."""

    versions: dict[str, Template] = field(default_factory=dict)
    active: dict[str, Template] = field(default_factory=dict)
    locations: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # id -> (slug, groups)
    stamp: tuple[Any, ...] = ()
    _effective: dict[tuple[str, str], Template | None] = field(default_factory=dict)
    _by_event: dict[tuple[str, str | None], list[tuple[Template, str]]] = field(default_factory=dict)

    def effective_at(self, content_hash: str, location_id: str | None) -> Template | None:
        """The version as it runs at the location (None: the template does not cover it)."""
        key = (content_hash, location_id or "")
        if key not in self._effective:
            template = self.versions[content_hash]
            if location_id is None or location_id not in self.locations:
                self._effective[key] = template if not template.locations else None
            else:
                slug, groups = self.locations[location_id]
                self._effective[key] = (
                    effective(template, slug, groups) if template.covers(slug, groups) else None
                )
        return self._effective[key]

    def rules_for(
        self, event_type: str, location_id: str | None, kinds: tuple[str, ...]
    ) -> list[tuple[Template, str]]:
        """(effective template, rule name) of the active rules a kind of trigger on ``event_type``
        starts at the location: indexed by event type and location, never all scanned."""
        key = (f"{event_type}|{','.join(kinds)}", location_id)
        found = self._by_event.get(key)
        if found is None:
            found = []
            for template in self.active.values():
                for rule in template.rules:
                    if rule.trigger.kind in kinds and rule.trigger.event == event_type:
                        variant = self.effective_at(template.content_hash, location_id)
                        if variant is not None:
                            found.append((variant, rule.name))
            self._by_event[key] = found
        return found

    def schedules(self) -> list[tuple[Template, str]]:
        return [(t, r.name) for t in self.active.values() for r in t.rules if r.trigger.kind == "schedule"]


def catalogue_stamp(session: Session) -> tuple[Any, ...]:
    """Changes whenever a version is activated or deactivated, or a location is added."""
    row = session.execute(
        select(
            func.count(WorkflowVersion.id),
            func.max(WorkflowVersion.activated_at),
            func.count().filter(WorkflowVersion.active.is_(True)),
        )
    ).one()
    return (*tuple(row), session.scalar(select(func.count(Location.id))))


def load_catalogue(session: Session) -> Catalogue:
    catalogue = Catalogue(stamp=catalogue_stamp(session))
    for version in session.scalars(select(WorkflowVersion).order_by(WorkflowVersion.created_at)):
        template = load_text(version.content, f"{version.name}@{version.content_hash[:12]}")
        catalogue.versions[version.content_hash] = template
        if version.active:
            catalogue.active[version.name] = template
    for location in session.scalars(select(Location)):
        catalogue.locations[location.id] = (location.slug, list(location.groups or []))
    return catalogue


def versions_of(db: Database, name: str) -> list[dict[str, Any]]:
    with db.sessions() as session:
        rows = session.scalars(
            select(WorkflowVersion)
            .where(WorkflowVersion.name == name)
            .order_by(WorkflowVersion.created_at.desc())
        ).all()
        return [version_view(v) for v in rows]


def version_view(v: WorkflowVersion) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": v.version,
        "content_hash": v.content_hash,
        "owner": v.owner,
        "active": v.active,
        "activated_by": v.activated_by,
        "reason": v.reason,
        "activated_at": v.activated_at.isoformat() if v.activated_at else None,
        "created_at": v.created_at.isoformat(),
    }


def stored_text(db: Database, name: str, ref: str | None = None) -> tuple[str, WorkflowVersion]:
    """A stored version's text: the active one, or the one whose hash starts with ``ref``."""
    with db.sessions() as session:
        query = select(WorkflowVersion).where(WorkflowVersion.name == name)
        query = (
            query.where(WorkflowVersion.active.is_(True))
            if ref is None
            else query.where(WorkflowVersion.content_hash.startswith(ref))
        )
        found = session.scalars(query).first()
        if found is None:
            raise NotFound(f"no stored version {ref or 'active'} of workflow {name!r}")
        session.expunge(found)
        return found.content, found
