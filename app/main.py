"""The FastAPI application: REST API, dashboard, health and metrics."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from starlette.middleware.sessions import SessionMiddleware

from app import __version__, bootstrap
from app.api import openapi, problems
from app.api.routes import (
    agent,
    archive,
    arrays,
    audit,
    connections,
    disk_images,
    health,
    holds,
    inventory,
    jobs,
    mailboxes,
    policies,
    repositories,
    restore_points,
    security,
    servers,
    tokens,
    users,
    whole_vm,
)
from app.composition import load_handlers
from app.config import Settings, get_settings
from app.metrics import HttpMetrics, ProtectionCollector
from app.security.guard import RequestGuard
from app.security.headers import ApiHeaders
from app.state import Runtime
from app.web import routes as web

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)

API_DESCRIPTION = """
Bulwark protects Microsoft Exchange running on VMware vSphere.

Authenticate with an API token (`Authorization: Bearer bwk_…`, created with
`bulwark token create` or `POST /api/v1/tokens`). Errors are RFC 9457 problem details.
Secrets (passwords, keys) are write-only: they are accepted, never returned.
"""


def create_app(settings: Settings | None = None, *, background_jobs: bool = False) -> FastAPI:
    """The application. ``background_jobs`` also runs the scheduler and one worker in this
    process (``bulwark serve`` does; tests of the API alone do not)."""
    settings = settings or get_settings()
    runtime = Runtime.from_settings(settings)
    # Jobs the API queues take their requirements from the handlers' registrations.
    load_handlers()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        bootstrap.prepare(runtime)
        jobs = None
        if background_jobs:
            from app.composition import start_background

            jobs = start_background(
                runtime, worker_name=settings.worker_name, capabilities=settings.worker_capabilities
            )
        try:
            yield
        finally:
            if jobs is not None:
                jobs.stop()
            runtime.db.dispose()

    app = FastAPI(
        title="Bulwark",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        # Served by app.api.openapi: for signed-in readers, from static/, under the CSP.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.runtime = runtime
    app.state.registry = CollectorRegistry()
    app.state.registry.register(ProtectionCollector(runtime.db))
    problems.install(app)
    openapi.install(app)

    for module in (
        connections,
        arrays,
        inventory,
        servers,
        policies,
        jobs,
        restore_points,
        disk_images,
        whole_vm,
        repositories,
        holds,
        mailboxes,
        archive,
        audit,
        users,
        tokens,
        security,
    ):
        app.include_router(module.router)
    app.include_router(agent.router)
    app.include_router(agent.admin)
    app.include_router(health.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")

    # Inside the session middleware (it needs the cookie decoded), before any route.
    app.add_middleware(RequestGuard, runtime=runtime)
    app.add_middleware(
        SessionMiddleware,
        secret_key=runtime.session_key.hex(),
        session_cookie="bulwark_session",
        max_age=settings.session_max_age_s,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    app.add_middleware(ApiHeaders)
    app.add_middleware(HttpMetrics, registry=app.state.registry)
    return app
