"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.api.deps import Reader, runtime

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz():
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database answers")
def readyz(request: Request):
    try:
        with runtime(request).db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means not ready
        return JSONResponse(
            {"status": "unavailable", "database": type(exc).__name__}, status_code=503
        )
    return {"status": "ok", "database": "ok"}


@router.get(
    "/metrics",
    summary="Prometheus metrics (needs a reader token)",
    response_class=PlainTextResponse,
)
def metrics(request: Request, _: Reader):
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
