"""Restore jobs for mail (``params.mode == "mailbox"``): messages, folders or a whole mailbox
as of a mailbox restore point, or messages found in the archive, APPENDed over IMAP into the
original place, a "Recovered Items" folder, or another user's mailbox.

Params: ``mailbox_restore_point_id`` with optional ``folders`` / ``message_ids`` (archive ids),
or ``message_ids`` alone (from the archive, each at its last known place); ``destination``:
``{"mailbox": str, "where": "original"|"recovered"|"folder", "folder": str|None}``.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select

from app.adapters import mail
from app.db.models import ArchiveMessage, Connection, Mailbox
from app.jobs.context import JobContext, JobResult, PermanentError
from app.mailboxes import connections as mail_connections
from app.mailboxes import restore as mrestore
from app.protection.restores.registry import RestoreMode, audit, register
from app.repository import ChunkDamaged, RepositoryError, open_repository

MODE = "mailbox"
CAPABILITY = "mail"


def _selection(session, params) -> tuple[list[mrestore.Item], int, int]:
    """Items to restore, the repository they are in, and the source mailbox's connection."""
    ids = params.get("message_ids")
    point_id = params.get("mailbox_restore_point_id")
    try:
        if point_id is not None:
            point = mrestore.restore_point(session, int(point_id))
            items = mrestore.items_in(
                session, point, folders=params.get("folders"), archive_ids=ids
            )
            mailbox = session.get(Mailbox, point.mailbox_id)
            return items, point.repository_id, mailbox.connection_id
    except (LookupError, mrestore.NothingToRestore) as exc:
        raise PermanentError(str(exc)) from exc
    if not ids:
        raise PermanentError("say what to restore: a mailbox restore point or archive messages")
    items = mrestore.archive_items(session, ids)
    if not items:
        raise PermanentError("none of the archive messages exists any more")
    repos = set(
        session.scalars(
            select(ArchiveMessage.repository_id).where(ArchiveMessage.id.in_(list(ids)))
        )
    )
    if len(repos) != 1:
        raise PermanentError("restore messages of one repository at a time")
    mailbox = session.scalar(select(Mailbox).where(Mailbox.name == items[0].mailbox))
    return items, repos.pop(), mailbox.connection_id


def run(ctx: JobContext) -> JobResult:
    secrets = ctx.runtime.secrets if ctx.runtime is not None else None
    if secrets is None:
        raise PermanentError("mail restores need the service's secrets (run in a worker)")
    dest = ctx.params.get("destination") or {}
    with ctx.db.session() as session:
        items, repository_id, source_connection = _selection(session, ctx.params)
        if not items:
            raise PermanentError("the selection holds no messages")
        # No destination mailbox: each message goes back to the mailbox it came from.
        groups: dict[str, list[mrestore.Item]] = defaultdict(list)
        for item in items:
            groups[dest.get("mailbox") or item.mailbox].append(item)
        connection_of = {
            m.name: m.connection_id
            for m in session.scalars(select(Mailbox).where(Mailbox.name.in_(list(groups))))
        }
        accounts = {}
        try:
            for name in groups:
                conn_id = (
                    ctx.params.get("connection_id") or connection_of.get(name) or source_connection
                )
                conn = session.get(Connection, conn_id)
                if conn is None:
                    raise PermanentError("the mail connection is gone")
                accounts[name] = mail_connections.account_for(conn, secrets)
            repo = open_repository(session, repository_id, root_key=ctx.runtime.settings.root_key())
        except (mail_connections.InvalidMailOptions, RepositoryError) as exc:
            raise PermanentError(str(exc)) from exc
    ctx.step("restore", f"restoring {len(items)} message(s) into {', '.join(groups)}")
    restored = skipped = done = 0
    folders: list[str] = []
    for name, group in groups.items():
        destination = mrestore.Destination(
            mailbox=name, where=dest.get("where", "original"), folder=dest.get("folder")
        )

        def progress(n: int, _total: int, base: int = done) -> None:
            ctx.progress(percent=100.0 * (base + n) / max(1, len(items)))

        try:
            outcome = mrestore.restore(repo, accounts[name], group, destination, progress=progress)
        except ChunkDamaged as exc:
            raise PermanentError(f"the repository copy is damaged: {exc}") from exc
        except mail.AuthenticationFailed as exc:
            raise PermanentError(str(exc)) from exc
        done += len(group)
        restored += outcome.restored
        skipped += outcome.skipped_existing
        folders += [f"{name}/{f}" for f in outcome.folders]
        audit(
            ctx,
            "restore.mailbox",
            "mailbox",
            name,
            restored=outcome.restored,
            skipped_existing=outcome.skipped_existing,
            folders=outcome.folders,
            source_point=ctx.params.get("mailbox_restore_point_id"),
        )
    ctx.progress(percent=100)
    return JobResult(
        message=f"{restored} message(s) restored into {', '.join(groups)}"
        + (f", {skipped} already there" if skipped else ""),
        details={"restored": restored, "skipped_existing": skipped, "folders": folders},
    )


# Mail restores name archive messages or a mailbox restore point, not a catalog restore
# point; they are queued by the mail API (app.api.mail.queue_mail_restore).
MAILBOX = register(
    RestoreMode(
        names=(MODE,),
        applies_to=lambda point: True,
        capabilities=(CAPABILITY,),
        run=run,
    )
)
