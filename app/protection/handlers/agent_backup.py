"""The in-guest agent stream backup (``agent_stream``), the service's half.

The job hands the server's agent a task and follows it: the agent snapshots, checks and
streams (app/agent/runner.py) while this handler watches its heartbeat and the job's cancel.
When the agent reports every file in, the handler saves the manifests, catalogs the restore
point, and only then marks the task durable, which is the agent's signal to complete the
backup so Exchange truncates its logs. A failed, cancelled or silent agent leaves no restore
point, and its task is failed so the agent never truncates.

Levels: the first backup of a database (and every ``FULL_EVERY``-th) is a full; the others
are incrementals of the logs since the previous point of the same chain. The agent falls
back to a full, with the reason, when the chain cannot continue.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from app.agent import protocol as p
from app.audit import SYSTEM, record
from app.db.models import (
    AgentTask,
    ExchangeDatabase,
    ExchangeServer,
    Policy,
    RestorePoint,
    RestorePointCopy,
)
from app.db.types import utcnow
from app.domain.protection import (
    Consistency,
    CopyLocation,
    ProtectionMethod,
    RestoreCapability,
    RestorePointStatus,
)
from app.jobs.context import JobCancelled, JobContext, JobResult, PermanentError
from app.protection.bindings import agents as svc
from app.repository import Manifest
from app.repository.connection import open_job_repository
from app.repository.manifest import image_hash

FULL_EVERY = 7
# Silence of the agent (no heartbeat, no progress) after which the task is failed.
SILENT_AFTER_S = 60
WAIT_SLICE_S = 1.0
LOG_DISK_WARN_FREE = 0.15  # a log disk with less free space than this raises a warning


def digest_key(repo) -> str | None:
    """The key an encrypted repository hashes chunks with, for the agent to name them alike
    (docs/agent.md says why that is acceptable); None for a plain repository."""
    key = getattr(repo.chunks, "_digest_key", None)
    return key.hex() if key else None


def handles(ctx: JobContext) -> bool:
    if ctx.server_id is None or ctx.policy_id is None:
        return False
    with ctx.db.session() as session:
        method = session.scalar(select(Policy.method).where(Policy.id == ctx.policy_id))
    return method == ProtectionMethod.AGENT_STREAM


def silent_after(ctx: JobContext) -> float:
    settings = ctx.runtime.settings if ctx.runtime else None
    return float(getattr(settings, "agent_silent_after_s", SILENT_AFTER_S) or SILENT_AFTER_S)


def previous_point(session, policy_id: int, server_id: int, database_id: int):
    """The newest available agent restore point of this policy and database."""
    return session.scalar(
        select(RestorePoint)
        .where(
            RestorePoint.policy_id == policy_id,
            RestorePoint.database_id == database_id,
            RestorePoint.method == ProtectionMethod.AGENT_STREAM,
            RestorePoint.status == RestorePointStatus.AVAILABLE,
        )
        .order_by(RestorePoint.captured_at.desc(), RestorePoint.id.desc())
        .limit(1)
    )


def _dag_entry(session, server: ExchangeServer, database: str) -> dict[str, Any] | None:
    agent = svc.agent_of(session, server.id)
    for entry in (agent.inventory or {}).get("databases", []) if agent else []:
        if entry.get("name") == database:
            return entry
    return None


def one_per_dag_database(session, targets: list[Any]) -> list[Any]:
    """A policy-wide run backs up each DAG database once, whichever members it names."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for t in targets:
        server = session.get(ExchangeServer, t.server_id)
        database = session.get(ExchangeDatabase, t.database_id) if t.database_id else None
        entry = _dag_entry(session, server, database.name) if server and database else None
        key = (entry or {}).get("dag")
        if key and database is not None:
            if (key, database.name) in seen:
                continue
            seen.add((key, database.name))
        kept.append(t)
    return kept


def choose_source(
    session, policy: Policy, server: ExchangeServer, database: str
) -> tuple[ExchangeServer, str | None]:
    """Which server's copy to back up: the target itself, or for a DAG database the copy the
    policy prefers (a healthy passive one, falling back to the active by default), on a
    member whose agent is online. A member whose last backup of it failed goes last."""
    entry = _dag_entry(session, server, database)
    if not entry or not entry.get("dag") or not entry.get("copies"):
        return server, None
    copies = entry["copies"]
    members = {
        s.name: s
        for s in session.scalars(
            select(ExchangeServer).where(ExchangeServer.name.in_([c["server"] for c in copies]))
        )
    }

    def usable(copy: dict[str, Any]) -> bool:
        member = members.get(copy["server"])
        return (
            member is not None
            and bool(copy.get("healthy"))
            and svc.is_online(svc.agent_of(session, member.id))
            and any(d.name == database for d in member.databases)
        )

    # The last run's source drops to the end of the order when that run failed.
    failed_last: set[int] = set()
    for t in session.scalars(
        select(AgentTask).where(AgentTask.kind == "backup").order_by(AgentTask.id.desc()).limit(50)
    ):
        if t.params.get("policy_id") == policy.id and t.params.get("database") == database:
            if t.state == p.FAILED:
                failed_last.add(t.server_id)
            break
    preferred = list(policy.dag_preferred or [])

    def rank(copy: dict[str, Any]):
        member = members[copy["server"]]
        where = preferred.index(copy["server"]) if copy["server"] in preferred else len(preferred)
        return (
            member.id in failed_last,
            where,
            copy.get("copy_queue", 0) + copy.get("replay_queue", 0),
        )

    passives = sorted((c for c in copies if not c.get("active") and usable(c)), key=rank)
    actives = [c for c in copies if c.get("active") and usable(c)]
    order = {"active": actives, "passive": passives}.get(policy.dag_source, passives + actives)
    if not order:
        states = ", ".join(
            f"{c['server']} ({'active' if c.get('active') else 'passive'}"
            f"{'' if c.get('healthy') else ', failed'})"
            for c in copies
        )
        raise PermanentError(
            f"no copy of {database} in DAG {entry['dag']} fits the policy's backup source "
            f"'{policy.dag_source}' on a member with an online agent: {states}"
        )
    pick = order[0]
    kind = "active" if pick.get("active") else "passive"
    why = f"DAG {entry['dag']}: backing up the {kind} copy on {pick['server']}"
    if kind == "active" and policy.dag_source == "passive_first":
        why += " (no healthy passive copy on a member with an online agent)"
    return members[pick["server"]], why


def run(ctx: JobContext) -> JobResult:
    with ctx.db.session() as session:
        policy = session.get(Policy, ctx.policy_id)
        server = session.get(ExchangeServer, ctx.server_id)
        database = session.get(ExchangeDatabase, ctx.database_id) if ctx.database_id else None
        if policy is None or server is None:
            raise PermanentError("the policy or the server was removed before the backup ran")
        if database is None:
            raise PermanentError("an agent stream backup protects a database: pick one")
        if policy.repository_id is None:
            raise PermanentError(f"policy {policy.name} names no repository")
        agent = svc.agent_of(session, server.id)
        if agent is None or agent.revoked_at is not None:
            raise PermanentError(
                f"no agent is enrolled on {server.name}: create an enrollment code on the "
                "server's page and run 'bulwark agent enroll' in the guest"
            )
        source, source_why = choose_source(session, policy, server, database.name)
        if source.id != server.id:
            agent = svc.agent_of(session, source.id)
        if not svc.is_online(agent):
            raise PermanentError(
                f"the agent on {server.name} is offline (last seen {agent.last_seen_at}); "
                "start the Bulwark agent service in the guest"
            )
        prev = previous_point(session, policy.id, server.id, database.id)
        level_params: dict[str, Any] = {"logs_after": None, "chain": secrets.token_hex(6)}
        if prev is not None and not ctx.params.get("full"):
            d = prev.details
            if d.get("chain") and d.get("chain_length", 1) < FULL_EVERY:
                level_params = {
                    "logs_after": d["log_range"][1],
                    "chain": d["chain"],
                    "base_point": prev.id,
                    "chain_length": d.get("chain_length", 1),
                }
        names = (source.name, database.name, policy.id, policy.repository_id, source.id)
    server_name, db_name, policy_id, repository_id, source_id = names
    if source_why:
        ctx.event(source_why)
    repo = open_job_repository(ctx, repository_id)
    ctx.step("snapshot", f"asking the agent on {server_name} to back up {db_name}")
    writer = repo.writers.begin(None)  # GC spares what the agent sends until we are done
    ctx.add_leftover({"kind": "agent_writer", "writer": writer, "repository_id": repository_id})
    with ctx.db.session() as session:
        task = svc.create_task(
            session,
            source_id,
            ctx.job_id,
            "backup",
            {
                "database": db_name,
                "policy_id": policy_id,
                "logs_after": level_params["logs_after"],
                "chain": level_params["chain"],
                "repository_id": repository_id,
                "block_size": repo.block_size,
                # Encrypted repositories key their digests: the agent must name chunks alike.
                "digest_key": digest_key(repo),
            },
        )
        task_id = task.id
    ctx.add_leftover({"kind": "agent_task", "task": task_id})
    try:
        task = _follow(ctx, task_id, until=(p.COPIED,), server_id=source_id)
        ctx.step("catalog")
        level_params["source_server"] = server_name
        point_id, manifests = _catalog(ctx, repo, task, policy_id, level_params, writer)
        with ctx.db.session() as session:
            svc.move(session, task_id, (p.COPIED,), p.DURABLE)
        ctx.step("truncate", "restore point durable: the agent completes the backup")
        task = _follow(ctx, task_id, until=(p.DONE,), after_durable=True, server_id=source_id)
    finally:
        repo.writers.end(writer)
    truncation = task.report.get("truncation") if task.state == p.DONE else None
    warnings = _record_truncation(ctx, point_id, truncation, task)
    for w in warnings:
        ctx.warning(w)
    ctx.progress(percent=100)
    return JobResult(
        partial=bool(warnings),
        message=f"restore point {point_id}" + (f" ({'; '.join(warnings)})" if warnings else ""),
        details={
            "restore_point_id": point_id,
            "manifests": manifests,
            "truncation": truncation,
            "sent_chunks": task.report.get("sent_chunks"),
            "bytes_sent": task.report.get("sent_bytes"),
        },
    )


def _follow(
    ctx: JobContext,
    task_id: int,
    *,
    until: tuple[str, ...],
    after_durable: bool = False,
    server_id: int | None = None,
) -> AgentTask:
    """Wait for the task to reach ``until``; fail it when the job is cancelled or the agent
    falls silent. A failure before durable means no restore point."""
    limit = silent_after(ctx)
    started = datetime.now(UTC)
    while True:
        try:
            ctx.check_cancelled()
        except JobCancelled:
            with ctx.db.session() as session:
                svc.move(session, task_id, (p.QUEUED, p.RUNNING, p.COPIED), p.CANCELLED)
            raise
        task = svc.wait_for(
            ctx.db.session,
            task_id,
            lambda t: t.state in until or t.state in p.FINISHED,
            timeout=WAIT_SLICE_S,
        )
        if task is None:
            raise PermanentError("the agent task vanished")
        if task.state in until:
            return task
        if task.state == p.FAILED:
            if after_durable:
                return task
            raise PermanentError(f"the agent failed: {task.error}")
        if task.state == p.CANCELLED:
            raise PermanentError("the agent task was cancelled")
        ctx.progress(bytes_done=task.bytes_done)
        with ctx.db.session() as session:
            agent = svc.agent_of(session, server_id or ctx.server_id)
            last = max(
                t for t in (agent.last_seen_at if agent else None, task.heartbeat_at, started) if t
            )
        if (utcnow() - last).total_seconds() > limit:
            with ctx.db.session() as session:
                svc.move(
                    session,
                    task_id,
                    (p.QUEUED, p.RUNNING, p.COPIED, p.DURABLE),
                    p.FAILED,
                    error=f"the agent stopped answering for {limit:.0f} s",
                )
            if after_durable:
                return svc.wait_for(ctx.db.session, task_id, lambda t: True, timeout=0)
            raise PermanentError(
                f"the agent stopped answering for {limit:.0f} s; nothing was cataloged and "
                "no log was truncated"
            )


def _catalog(ctx, repo, task: AgentTask, policy_id: int, level: dict, writer: str):
    report = task.report
    snap = report.get("snapshot", {})
    full = bool(snap.get("full"))
    created = datetime.now(UTC)
    manifests: dict[str, str] = {}
    copies = []
    size = 0
    for g in report["groups"]:
        m = Manifest(
            id=None,
            size=int(g["size"]),
            block_size=repo.block_size,
            blocks=list(g["blocks"]),
            image_hash=image_hash(int(g["size"]), repo.block_size, list(g["blocks"])),
            source={
                "kind": "agent_stream",
                "group": g["group"],
                "database": task.params["database"],
                "files": g["files"],
            },
            created_at=created,
            read_mode="full" if full else "incremental",
        )
        if m.size > 0 and -(-m.size // m.block_size) != len(m.blocks):
            raise PermanentError(f"the agent's {g['group']} block list does not match its size")
        manifest_id = f"{created:%Y%m%dt%H%M%S}z-{secrets.token_hex(6)}"
        m.id = manifest_id
        ctx.add_leftover({"kind": "agent_manifest", "manifest": manifest_id, "repository": repo.id})
        repo.save_manifest(m)
        manifests[g["group"]] = manifest_id
        copies.append(
            RestorePointCopy(
                location=CopyLocation.REPOSITORY,
                reference=manifest_id,
                connection_id=repo.id,
                size_bytes=m.size,
            )
        )
        size += m.size
    chain_length = 1 if full else level.get("chain_length", 1) + 1
    details = {
        "level": "full" if full else "incremental",
        "full_because": snap.get("full_because"),
        # A full the agent took instead of an incremental starts a chain of its own.
        "chain": secrets.token_hex(6) if full and level.get("base_point") else level["chain"],
        "chain_length": chain_length,
        "base_point": None if full else level.get("base_point"),
        "log_range": snap.get("log_range"),
        "checkpoint_generation": snap.get("checkpoint_generation"),
        "check": report.get("check"),
        "manifests": manifests,
        "database": task.params["database"],
        "source_server": level.get("source_server"),
        "sent_chunks": report.get("sent_chunks"),
        "log_state_at_backup": report.get("log_state"),
    }
    with ctx.db.session() as session:
        point = RestorePoint(
            policy_id=policy_id,
            server_id=ctx.server_id,
            database_id=ctx.database_id,
            job_id=ctx.job_id,
            method=ProtectionMethod.AGENT_STREAM,
            consistency=Consistency.HOT_APPLICATION,
            capabilities=[RestoreCapability.WHOLE_DATABASE.value],
            size_bytes=size,
            details=details,
        )
        point.copies = copies
        session.add(point)
        session.flush()
        record(
            session,
            SYSTEM,
            "restore_point.create",
            "restore_point",
            point.id,
            job=ctx.job_id,
            level=details["level"],
            log_range=details["log_range"],
        )
        # The manifests belong to the catalog now; the task still needs finishing.
        ctx.clear_leftovers(session)
        point_id = point.id
    ctx.add_leftover({"kind": "agent_task", "task": task.id})
    if details["full_because"]:
        ctx.warning(f"a full backup was taken instead of an incremental: {details['full_because']}")
    return point_id, manifests


def _record_truncation(ctx, point_id: int, truncation: dict | None, task: AgentTask) -> list[str]:
    warnings = []
    if truncation is None:
        warnings.append(
            "Exchange's logs were not truncated: the agent did not complete the backup "
            f"({task.error or 'no answer'})"
        )
    else:
        if not truncation.get("truncated"):
            warnings.append(
                "Exchange kept its logs after a successful backup (generations "
                f"{truncation.get('generations_before')} → {truncation.get('generations_after')})"
            )
        total = truncation.get("log_disk_total") or 0
        free = truncation.get("log_disk_free") or 0
        if total and free / total < LOG_DISK_WARN_FREE:
            warnings.append(
                f"the log disk is {100 - 100 * free / total:.0f}% full; Exchange dismounts its "
                "databases when it fills"
            )
    with ctx.db.session() as session:
        point = session.get(RestorePoint, point_id)
        point.details = {**point.details, "truncation": truncation, "log_warnings": warnings}
        ctx.clear_leftovers(session)
    return warnings


def cleanup(ctx: JobContext, leftovers: list[dict[str, Any]]) -> None:
    """After a crash or failure: fail the task (so the agent never truncates), end the
    repository writer, and remove manifests no restore point names."""
    for item in leftovers:
        kind = item.get("kind")
        if kind == "agent_task":
            with ctx.db.session() as session:
                svc.move(
                    session,
                    item["task"],
                    (p.QUEUED, p.RUNNING, p.COPIED),
                    p.FAILED,
                    error="the backup job stopped",
                )
        elif kind == "agent_writer":
            repo = open_job_repository(ctx, item["repository_id"])
            repo.writers.end(item["writer"])
        elif kind == "agent_manifest":
            with ctx.db.session() as session:
                named = session.scalar(
                    select(RestorePointCopy.id).where(
                        RestorePointCopy.reference == item["manifest"]
                    )
                )
            if named is None:
                repo = open_job_repository(ctx, item["repository"])
                repo.delete_manifest(item["manifest"])
