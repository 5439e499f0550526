"""Open health checks: /healthz (the process answers) and /readyz (database reachable, schema current)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from careops.api.deps import DbDep
from careops.db import in_thread
from careops.migrate import pending_revision

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database reachable and migrations current",
    responses={503: {"description": "The database is unreachable or its migrations are pending"}},
)
async def readyz(db: DbDep) -> JSONResponse:
    def check() -> tuple[int, dict[str, str]]:
        try:
            with db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            pending = pending_revision(db.engine)
        except Exception:
            return 503, {"status": "unavailable", "database": "unreachable"}
        if pending is not None:
            return 503, {"status": "unavailable", "database": "migrations pending: run `careops migrate`"}
        return 200, {"status": "ready"}

    status, body = await in_thread(check)
    return JSONResponse(body, status_code=status)
