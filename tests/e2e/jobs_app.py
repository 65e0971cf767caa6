"""App factory for the end-to-end flows that need jobs to run: the service as ``bulwark serve``
starts it (scheduler and one in-process worker with the settings' capabilities, ``vcenter``).

    uvicorn --factory tests.e2e.jobs_app:create_app
"""

from __future__ import annotations

from fastapi import FastAPI

from app.main import create_app as _create_app


def create_app() -> FastAPI:
    return _create_app(background_jobs=True)
