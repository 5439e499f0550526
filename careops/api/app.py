"""The FastAPI application: routers, problem handlers and shared state."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from careops import __version__
from careops.api import cases, exceptions, health, problems, quarantine, referrals
from careops.db import Database
from careops.governance.tokens import TokenVerifier
from careops.orchestration.intake import CatalogueCache
from careops.settings import Settings, get_settings

OPEN_ROUTES = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    db = db or Database(settings.database_url)
    app = FastAPI(
        title="careops",
        version=__version__,
        description="Operations control plane for healthcare service organisations. "
        "Every /api route needs `Authorization: Bearer cop_...` (see `careops token create`).",
    )
    app.state.settings = settings
    app.state.db = db
    app.state.tokens = TokenVerifier(db, settings.token_cache_seconds)
    app.state.catalogue = CatalogueCache(settings.reference_cache_seconds)
    problems.install(app)
    for module in (health, referrals, cases, exceptions, quarantine):
        app.include_router(module.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                referrals.REFERRAL_SCHEMA_DEFS
            )
            schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
