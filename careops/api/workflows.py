"""/api/v1/workflows and /api/v1/automation: workflow templates (active versions, a location's
effective workflow with its graph, every version), activation from YAML (audited, with a reason),
dry runs of an event, recent rule runs and failing scheduled actions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from careops.api.contract import answers
from careops.api.deps import DbDep, require
from careops.automation.service import (
    activate_text,
    dry_run,
    failing_schedules,
    list_workflows,
    recent_runs,
    workflow_detail,
)
from careops.automation.store import deactivate
from careops.db import in_thread
from careops.domain.models import PLAIN_TEXT
from careops.governance.principal import Principal

router = APIRouter(tags=["automation"])
Reader = Annotated[Principal, Depends(require("workflows:read"))]
Manager = Annotated[Principal, Depends(require("workflows:manage"))]
Name = Annotated[str, Path(pattern=r"^[a-z][a-z0-9-]{0,63}$", description="The workflow's name.")]
Reason = Annotated[str, Field(min_length=1, max_length=500, pattern=PLAIN_TEXT, description="Why (audited).")]


class TemplateIn(BaseModel):
    content: str = Field(min_length=1, max_length=200_000, description="The template's YAML.")
    reason: Reason


class DeactivateIn(BaseModel):
    reason: Reason


class EventIn(BaseModel):
    type: str = Field(min_length=1, max_length=64, pattern=r"^[a-z_]+\.[a-z_]+$")
    subject_type: str | None = Field(None, max_length=32, pattern=r"^[a-z_]+$")
    subject_id: str | None = Field(None, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    case_id: str | None = Field(None, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    payload: dict[str, Any] = Field(default_factory=dict)


class DryRunIn(BaseModel):
    event: EventIn
    location: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")


@router.get("/api/v1/workflows", summary="The active workflow templates with their rules")
async def workflows(db: DbDep, principal: Reader) -> dict[str, Any]:
    return {"items": await in_thread(list_workflows, db)}


@router.post(
    "/api/v1/workflows",
    status_code=201,
    summary="Validate a template and make it the active version of its name (audited)",
    responses=answers(422, s422="The template does not load or validate: the message names the line."),
)
async def activate_workflow(db: DbDep, principal: Manager, body: TemplateIn) -> dict[str, Any]:
    return await in_thread(lambda: activate_text(db, body.content, actor=principal.id, reason=body.reason))


@router.get(
    "/api/v1/workflows/{name}",
    summary="A workflow's active version, as it runs at a location, with its graph and versions",
    responses=answers(404),
)
async def workflow(
    db: DbDep,
    principal: Reader,
    name: Name,
    location: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
    ] = None,
) -> dict[str, Any]:
    return await in_thread(workflow_detail, db, name, location, principal.scope)


@router.post(
    "/api/v1/workflows/{name}/deactivate",
    summary="Stop a workflow: no new runs (audited)",
    responses=answers(404),
)
async def deactivate_workflow(
    db: DbDep, principal: Manager, name: Name, body: DeactivateIn
) -> dict[str, str]:
    await in_thread(lambda: deactivate(db, name, actor=principal.id, reason=body.reason))
    return {"name": name, "status": "inactive"}


@router.post(
    "/api/v1/workflows/{name}/dry-run",
    summary="Which rules of the workflow ('all': every active one) an event would start, changing nothing",
    responses=answers(404),
)
async def dry_run_workflow(db: DbDep, principal: Reader, name: Name, body: DryRunIn) -> dict[str, Any]:
    event = body.event.model_dump()
    chosen = None if name == "all" else name
    return {"items": await in_thread(dry_run, db, chosen, event, body.location, principal.scope)}


@router.get("/api/v1/automation/runs", summary="Recent rule runs, newest first, in the caller's locations")
async def runs(
    db: DbDep,
    principal: Reader,
    workflow: Annotated[str | None, Query(max_length=100, pattern=r"^[a-z][a-z0-9-]*$")] = None,
    status: Literal["done", "failed", "waiting", "rate_limited", "loop_stopped"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    return {
        "items": await in_thread(
            lambda: recent_runs(db, principal.scope, workflow=workflow, status=status, limit=limit)
        )
    }


@router.get(
    "/api/v1/automation/schedules/failing", summary="Scheduled-action ticks that failed or hang (7 days)"
)
async def failing(db: DbDep, principal: Reader) -> dict[str, Any]:
    return {"items": await in_thread(failing_schedules, db)}
