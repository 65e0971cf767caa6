"""Mail handed out or put back: shared by the mailbox and archive routes and the dashboard."""

from __future__ import annotations

import tempfile

from fastapi import Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from app.api.deps import require, runtime
from app.api.downloads import attachment
from app.api.problems import Problem, invalid
from app.db.models import ArchiveMessage, Job
from app.domain.jobs import JobKind
from app.jobs.enqueue import enqueue
from app.mailboxes import restore as mrestore
from app.protection.restores import mailbox as mailbox_restore
from app.repository import ChunkDamaged, RepositoryError, open_repository
from app.security.roles import Permission


def exporter(principal=require(Permission.READ)):
    """Exports hand out mail: restore operators and auditors (records requests) only."""
    if not (principal.can(Permission.RUN_RESTORE) or principal.can(Permission.READ_AUDIT)):
        raise Problem(
            403, f"role '{principal.role}' may not export mail", type_="/problems/forbidden"
        )
    return principal


def queue_mail_restore(session, principal, params: dict) -> Job:
    """A restore job for mail (run by a worker with the ``mail`` capability)."""
    params = {"mode": mailbox_restore.MODE, "requested_by": principal.actor.name, **params}
    return enqueue(session, JobKind.RESTORE, actor=principal.actor, params=params)


def stream_export(session, request: Request, items, fmt: str, filename: str):
    """Write the export to a temp file (bounded memory), then stream it."""
    if not items:
        raise invalid("nothing to export", "ids")
    repos = {}
    repo_of = dict(
        session.execute(
            select(ArchiveMessage.id, ArchiveMessage.repository_id).where(
                ArchiveMessage.id.in_({i.archive_id for i in items})
            )
        ).all()
    )
    key = runtime(request).settings.root_key()
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - the response streams it, then closes it
    try:
        by_repo: dict[int, list] = {}
        for i in items:
            by_repo.setdefault(repo_of[i.archive_id], []).append(i)
        if len(by_repo) > 1:
            raise invalid("export messages of one repository at a time")
        ((repository_id, group),) = by_repo.items()
        repos[repository_id] = open_repository(session, repository_id, root_key=key)
        writer = mrestore.export_eml_zip if fmt == "zip" else mrestore.export_mbox
        writer(repos[repository_id], group, spool)
    except (ChunkDamaged, RepositoryError) as exc:
        spool.close()
        raise Problem(
            502, f"the repository copy cannot be read: {exc}", type_="/problems/repository"
        ) from exc
    except Exception:
        spool.close()
        raise
    spool.seek(0)

    def chunks():
        try:
            while block := spool.read(1 << 20):
                yield block
        finally:
            spool.close()

    media = "application/zip" if fmt == "zip" else "application/mbox"
    return StreamingResponse(
        chunks(),
        media_type=media,
        headers={"Content-Disposition": attachment(f"{filename}.{fmt}")},
    )
