"""/console/automation: the active workflow templates, failing scheduled actions and recent rule
runs; a workflow's page with its effective version at a chosen location (parameters, YAML, the
Mermaid graph), every version with who activated it and why, and its recent runs."""

from __future__ import annotations

from typing import Annotated

import yaml
from fastapi import APIRouter, Depends, Request, Response

from careops.automation.service import (
    failing_schedules,
    list_workflows,
    recent_runs,
    workflow_detail,
)
from careops.db import in_thread
from careops.errors import CareopsError
from careops.governance.tokens import location_slugs
from careops.governance.users import ConsoleUser
from careops.web.pages import PathText, QueryText, member, refused_page, render

router = APIRouter(prefix="/console/automation", tags=["console"], include_in_schema=False)
Reader = Annotated[ConsoleUser, Depends(member("workflows:read"))]


@router.get("")
async def automation_page(request: Request, user: Reader) -> Response:
    db = request.app.state.db
    items = await in_thread(list_workflows, db)
    failing = await in_thread(failing_schedules, db)
    runs = await in_thread(lambda: recent_runs(db, user.principal.scope, limit=50))
    return render("automation.html", user, title="Automation", workflows=items, failing=failing, runs=runs)


@router.get("/{name}")
async def workflow_page(request: Request, name: PathText, user: Reader, location: QueryText = "") -> Response:
    db = request.app.state.db
    try:
        detail = await in_thread(workflow_detail, db, name, location or None, user.principal.scope)
    except CareopsError as exc:
        return refused_page(user, exc)
    runs = await in_thread(lambda: recent_runs(db, user.principal.scope, workflow=name, limit=50))
    slugs = await in_thread(location_slugs, db)
    places = sorted(slug for id_, slug in slugs.items() if user.principal.scope.allows(id_))
    text = yaml.safe_dump(detail["effective"], sort_keys=False, width=100)
    return render("automation_workflow.html", user, title=f"Workflow {name}", detail=detail, runs=runs,
                  places=places, location=location, text=text)  # fmt: skip
