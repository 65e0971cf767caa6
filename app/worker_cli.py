"""``bulwark worker``: a proxy process that runs jobs it has the capabilities for."""

from __future__ import annotations

import signal
import socket

import typer


def _parse_limits(values: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """``datastore:ds-1=2`` limits one resource, ``datastore=4`` every datastore."""
    limits: dict[str, int] = {}
    defaults: dict[str, int] = {}
    for value in values:
        key, sep, number = value.partition("=")
        if not sep or not key or not number.isdigit() or int(number) < 1:
            raise typer.BadParameter(f"expected RESOURCE=N, got {value!r}", param_hint="--limit")
        (limits if ":" in key else defaults)[key] = int(number)
    return limits, defaults


def worker_command(
    name: str = typer.Option(None, "--name", help="Unique worker name (default: this host's name)"),
    capability: list[str] = typer.Option(
        [],
        "--capability",
        "-c",
        help="What this proxy can reach, e.g. vcenter, array:btrfs-1, datastore:ds-1 (repeat)",
    ),
    concurrency: int = typer.Option(1, min=1, max=64, help="Jobs run at the same time"),
    limit: list[str] = typer.Option(
        [],
        "--limit",
        help="Running jobs per resource: datastore:ds-1=2, or datastore=4 for each (repeat)",
    ),
    lease_seconds: float = typer.Option(60.0, min=5.0, help="Lease; heartbeat every quarter"),
    scheduler: bool = typer.Option(
        False, "--scheduler/--no-scheduler", help="Also run the scheduler (one acts at a time)"
    ),
) -> None:
    """Run a worker (a proxy) that claims and runs jobs until interrupted."""
    from sqlalchemy import inspect

    from app import logs
    from app.composition import load_handlers
    from app.config import get_settings
    from app.jobs.background import BackgroundJobs
    from app.jobs.scheduler import Scheduler
    from app.jobs.worker import Worker
    from app.state import Runtime

    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    limits, defaults = _parse_limits(limit)
    runtime = Runtime.from_settings(settings, pre_ping=False)
    if not inspect(runtime.db.engine).has_table("jobs"):
        typer.echo("error: the database has no schema yet; run `bulwark migrate` first", err=True)
        raise typer.Exit(1)
    load_handlers()
    worker_name = (name or socket.gethostname())[:64]
    worker = Worker(
        runtime,
        worker_name,
        capability,
        concurrency,
        lease_seconds=lease_seconds,
        limits=limits,
        default_limits=defaults,
    )
    if not worker.kinds:
        typer.echo(
            f"warning: no registered job kind fits capabilities {capability or '[]'}", err=True
        )
    handle = BackgroundJobs(Scheduler(runtime.db) if scheduler else None, None)
    stop = handle.stop_event

    def _stop(signum, _frame):
        typer.echo(f"received signal {signum}; stopping after running jobs are handed back")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    handle.start(scheduler_interval=30.0)
    typer.echo(
        f"worker {worker_name}: capabilities {', '.join(worker.capabilities) or '-'}; "
        f"kinds {', '.join(worker.kinds) or 'none'}"
    )
    try:
        worker.run_forever(stop)
    finally:
        handle.stop()
        runtime.db.dispose()
