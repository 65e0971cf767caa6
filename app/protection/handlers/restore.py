"""The restore job: find the restore mode that takes the job (app.protection.restores) and
run it. Which modes exist, and what each needs, is the registry's to say."""

from __future__ import annotations

from app.db.models import RestorePoint
from app.domain.jobs import JobKind
from app.jobs.context import JobContext, JobResult, PermanentError
from app.jobs.handlers import JobRequest, Requirements, register
from app.protection.restores import registry


def run_restore(ctx: JobContext) -> JobResult:
    point_id = ctx.params.get("restore_point_id")
    with ctx.db.session() as session:
        point = session.get(RestorePoint, point_id) if point_id is not None else None
        mode = registry.find(point, ctx.params)
    if mode is None:
        raise PermanentError(f"restore mode '{registry.mode_name(ctx.params)}' is not available")
    return mode.run(ctx)


def cleanup_restore(ctx: JobContext, leftovers: list[dict]) -> None:
    for mode in registry.modes():
        if mode.cleanup is not None:
            mode.cleanup(ctx, leftovers)


def restore_requirements(session, request: JobRequest) -> Requirements:
    """What a restore job needs of a worker (asked by enqueue): what its mode says."""
    point_id = request.params.get("restore_point_id")
    point = session.get(RestorePoint, point_id) if point_id is not None else None
    mode = registry.find(point, request.params)
    return Requirements(tuple(mode.capabilities) if mode is not None else ())


# No capability for the kind as a whole: each restore job needs what its mode needs
# (vCenter, an array, a mail server), so a mail-only proxy can take mailbox restores.
register(JobKind.RESTORE, run_restore, cleanup_restore, requires=restore_requirements)
