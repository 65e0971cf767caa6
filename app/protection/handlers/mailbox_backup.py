"""The backup job of a ``mailbox`` policy: back up every protected mailbox of the mail
connections that front the target Exchange server (one mailbox restore point each), then
apply mailbox retention.

A mailbox policy targets an Exchange server (or one of its databases) like the other methods;
the mail connections whose ``exchange_server`` option names that server say which mail
service to read and which mailboxes to protect (see app/mailboxes/connections.py). It needs
no vCenter: the job runs on any worker declaring the ``mail`` capability.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import lazyload

from app.adapters import mail
from app.db.models import Connection, ExchangeServer, Policy
from app.domain.connections import ConnectionKind
from app.domain.protection import ProtectionMethod
from app.jobs.context import JobContext, JobResult, PermanentError
from app.mailboxes import connections as mail_connections
from app.mailboxes.backup import backup_mailbox
from app.mailboxes.indexer import index_pending
from app.mailboxes.retention import expire
from app.repository import RepositoryError, open_repository

CAPABILITY = "mail"


def handles(ctx: JobContext) -> bool:
    with ctx.db.session() as session:
        policy = session.get(Policy, ctx.policy_id, options=[lazyload(Policy.targets)])
        return policy is not None and policy.method == ProtectionMethod.MAILBOX


def serving(session, server: ExchangeServer) -> list[Connection]:
    """Mail connections that front this Exchange server."""
    conns = session.scalars(select(Connection).where(Connection.kind == ConnectionKind.MAIL))
    return [c for c in conns if (c.options or {}).get("exchange_server") == server.name]


def run(ctx: JobContext) -> JobResult:
    secrets = ctx.runtime.secrets if ctx.runtime is not None else None
    if secrets is None:
        raise PermanentError("mailbox backups need the service's secrets (run in a worker)")
    with ctx.db.session() as session:
        policy = session.get(Policy, ctx.policy_id, options=[lazyload(Policy.targets)])
        server = session.get(ExchangeServer, ctx.server_id)
        if policy is None or server is None:
            raise PermanentError("the policy or the server was removed before the backup ran")
        if policy.repository_id is None:
            raise PermanentError(f"policy {policy.name} has no repository")
        conns = serving(session, server)
        if not conns:
            raise PermanentError(
                f"no mail connection fronts {server.name}: set the 'exchange_server' option "
                f"of a mail connection to '{server.name}'"
            )
        plan = []
        for conn in conns:
            try:
                account = mail_connections.account_for(conn, secrets)
                names = mail_connections.options_of(conn).protected()
            except mail_connections.InvalidMailOptions as exc:
                raise PermanentError(str(exc)) from exc
            plan.append((conn.id, conn.name, account, names))
        try:
            repo = open_repository(
                session, policy.repository_id, root_key=ctx.runtime.settings.root_key()
            )
        except RepositoryError as exc:
            raise PermanentError(str(exc)) from exc
        policy_id, repository_id = policy.id, policy.repository_id
        retention_days = policy.compliance_retention_days
    total = sum(len(names) for *_, names in plan)
    ctx.step("copy", f"backing up {total} mailbox(es)")
    points, failed, new, done = [], [], 0, 0
    for conn_id, conn_name, account, names in plan:
        for name in names:
            ctx.check_cancelled()
            try:
                outcome = backup_mailbox(
                    ctx.db,
                    repo,
                    account,
                    connection_id=conn_id,
                    mailbox=name,
                    repository_id=repository_id,
                    policy_id=policy_id,
                    job_id=ctx.job_id,
                    retention_days=retention_days,
                    index=False,  # the index step below catalogs them all at once
                    cancelled=ctx.cancelled,
                )
            except mail.MailError as exc:
                ctx.warning(f"{conn_name}/{name}: {exc}")
                failed.append(name)
                continue
            points.append(outcome.restore_point_id)
            new += outcome.new_messages
            done += 1
            ctx.event(
                f"{name}: restore point {outcome.seq}, {outcome.new_messages} new, "
                f"{outcome.flag_changes} re-flagged, {outcome.expunged} gone"
            )
            ctx.progress(percent=100.0 * done / max(1, total))
    if not points:
        raise RuntimeError(f"no mailbox could be backed up ({', '.join(failed)})")
    ctx.step("index", "cataloging new messages for the archive search")
    indexed = index_pending(ctx.db, repo, repository_id)
    ctx.step("retain")
    with ctx.db.session() as session:
        expired = expire(session)
    return JobResult(
        partial=bool(failed),
        message=f"{done} mailbox(es) backed up, {new} new message(s)"
        + (f"; failed: {', '.join(failed)}" if failed else ""),
        details={
            "mailbox_restore_points": points,
            "indexed": indexed,
            "expired_mailbox_points": expired.expired_points,
        },
    )


def cleanup(ctx: JobContext, leftovers) -> None:
    """Nothing outside to clean: chunks no row names are freed by garbage collection, and a
    resumed backup continues from the folders' committed state."""
