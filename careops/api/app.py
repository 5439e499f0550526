"""The FastAPI application: routers, problem handlers and shared state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from anyio import to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from careops import __version__
from careops.api import (
    appointments,
    approvals,
    authorisations,
    billing,
    cases,
    contract,
    deliveries,
    documents,
    exceptions,
    fhir,
    health,
    hl7,
    inventory,
    metrics,
    problems,
    quarantine,
    reference,
    referrals,
    results,
    staffing,
    workflows,
)
from careops.api.deps import ApiLimits
from careops.api.request_tracing import RequestTracing
from careops.api.security_headers import SecurityHeaders
from careops.db import DATABASE_THREADS, Database
from careops.errors import ConfigurationError
from careops.governance.keys import load_field_keys
from careops.governance.tokens import TokenVerifier
from careops.integrations.inbound.channels import Inbound
from careops.integrations.inbound.fhir_r4 import prepare_validation
from careops.observability.logs import configure_logging
from careops.observability.tracing import configure_tracing
from careops.orchestration.intake import CatalogueCache
from careops.settings import Settings, get_settings
from careops.web import (
    admin,
    console,
    dashboard,
    operations,
    pages,
    queues,
    referral_form,
)
from careops.web import approvals as approval_pages
from careops.web import automation as automation_pages
from careops.web import deliveries as delivery_pages
from careops.web import reference as reference_pages
from careops.web import staffing as staffing_pages

# Routers of the API (each operation declares its permission) and of the server-rendered pages
# (the console checks its session and permissions itself; the partner form is public).
API_MODULES = (
    health,
    referrals,
    hl7,
    fhir,
    cases,
    appointments,
    authorisations,
    results,
    billing,
    inventory,
    staffing,
    workflows,
    approvals,
    deliveries,
    exceptions,
    documents,
    quarantine,
    reference,
    metrics,
)
PAGE_MODULES = (
    referral_form,
    console,
    queues,
    operations,
    staffing_pages,
    automation_pages,
    approval_pages,
    delivery_pages,
    dashboard,
    admin,
    reference_pages,
)
OPEN_ROUTES = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    db = db or Database(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Database work runs in worker threads (DATABASE_THREADS; anyio's for FastAPI's own plain
        # ``def`` routes): no more of them than pooled connections, so that a
        # burst queues here instead of opening and closing overflow connections (each one a
        # PostgreSQL backend started and torn down), which cost a third of the throughput at 50
        # connections (bench/RESULTS.md).
        to_thread.current_default_thread_limiter().total_tokens = db.pool_size
        DATABASE_THREADS.resize(db.pool_size)
        # Encrypted columns need the database's keys; an unmigrated database has none (and
        # /readyz says so): it is served only so that it can say it.
        with suppress(ConfigurationError):
            await to_thread.run_sync(load_field_keys, db, settings)
        # Compiled once a process (~0.5 s) so that the first FHIR request does not wait for it.
        await to_thread.run_sync(prepare_validation)
        # Every HTTP worker process also listens for MLLP and SMTP when asked (shared ports), once
        # it is ready: a worker busy compiling would be slow to take its share of the connections.
        servers = await app.state.inbound.listen(settings)
        yield
        for server in servers:
            server.close()

    app = FastAPI(
        lifespan=lifespan,
        title="careops",
        version=__version__,
        description="Operations control plane for healthcare service organisations. "
        "Every /api route needs `Authorization: Bearer cop_...` (see `careops token create`).",
    )
    app.state.settings = settings
    app.state.db = db
    app.state.tokens = TokenVerifier(db, settings.token_cache_seconds)
    app.state.api_limits = ApiLimits(
        settings.api_requests_per_minute_per_address, settings.api_requests_per_minute_per_token
    )
    app.state.catalogue = CatalogueCache(settings.reference_cache_seconds)
    app.state.inbound = Inbound.build(db, settings, app.state.catalogue)
    problems.install(app)
    pages.install(app)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestTracing)
    routers = [module.router for module in API_MODULES]
    for router in [*routers, *(module.router for module in PAGE_MODULES)]:
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                referrals.REFERRAL_SCHEMA_DEFS
            )
            api_routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
            contract.document(schema, api_routes, OPEN_ROUTES)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def create_served_app() -> FastAPI:
    """What ``careops serve`` runs in each HTTP worker: the app, with redacted JSON logs, on settings
    read now (serve passes its options through the environment; with one worker this runs in the
    same process, after the cached settings were read)."""
    configure_logging()
    settings = Settings()
    configure_tracing(settings.otlp_traces_endpoint)
    return create_app(settings)
