"""/console/dashboard: the KPIs of the event log for a period and a location, with charts drawn
on the server (SVG, no script), the queues as they stand, and a CSV export (audited)."""

from __future__ import annotations

import csv
import io
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from careops.db import in_thread
from careops.errors import CareopsError
from careops.governance.users import ConsoleUser
from careops.orchestration.dashboard import PERIODS, dashboard, export_rows, process_flow
from careops.web.pages import QueryText, member, refused_page, render

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)
Manager = Annotated[ConsoleUser, Depends(member("metrics:read"))]


def _period(days: int) -> int:
    return days if days in PERIODS else PERIODS[0]


@router.get("/dashboard")
async def kpi_dashboard(request: Request, user: Manager, days: int = 7, location: QueryText = "") -> Response:
    days = _period(days)
    try:
        data = await in_thread(dashboard, request.app.state.db, user.principal, days, location or None)
    except CareopsError as exc:
        return refused_page(user, exc)
    return render(
        "dashboard.html", user, title="Dashboard", data=data, days=days, location=location, periods=PERIODS
    )


@router.get("/dashboard.csv")
async def kpi_export(request: Request, user: Manager, days: int = 7, location: QueryText = "") -> Response:
    """The dashboard's numbers as CSV (no patient data in them); the export is audited."""
    days = _period(days)
    try:
        rows = await in_thread(export_rows, request.app.state.db, user.principal, days, location or None)
    except CareopsError as exc:
        return refused_page(user, exc)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["kpi", "dimension", "day", "value"])
    writer.writeheader()
    writer.writerows(rows)
    headers = {"Content-Disposition": f'attachment; filename="careops-kpis-{days}d.csv"'}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/flow")
async def flow(request: Request, user: Manager, days: int = 30, location: QueryText = "") -> Response:
    """The directly-follows graph of a location's cases: where work goes next, and how long it waits."""
    days = _period(days)
    try:
        graph = await in_thread(process_flow, request.app.state.db, user.principal, days, location or None)
    except CareopsError as exc:
        return refused_page(user, exc)
    return render(
        "flow.html", user, title="Process flow", graph=graph, days=days, location=location, periods=PERIODS
    )
