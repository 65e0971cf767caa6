"""Restoring a database through its server's agent: over the original (dismounted first,
the operator types the database's name), to another path, or as a Recovery Database; to a
point in time: the chain's full plus its incrementals up to a log generation, then soft
recovery in the guest (Exchange replays the logs). The agent checks the result before it
reports done."""

from __future__ import annotations

from typing import Any

from app.agent import protocol as p
from app.audit import Actor, record
from app.db.models import RestorePoint
from app.domain.protection import ProtectionMethod, RestorePointStatus, RestoreRefused
from app.jobs.context import JobContext, JobResult, PermanentError
from app.protection.bindings import agents as svc
from app.protection.handlers import agent_backup
from app.protection.handlers.agent_backup import digest_key
from app.protection.restores.registry import RestoreMode, register
from app.repository.connection import open_job_repository

MODES = {"agent_original": "original", "agent_path": "path", "agent_recovery": "recovery"}
CAPABILITY = "agent"
RESTORE_TIMEOUT_S = 6 * 3600


def is_agent_point(point: RestorePoint) -> bool:
    return point.method == ProtectionMethod.AGENT_STREAM


def confirm(point: RestorePoint, server_name: str, params: dict[str, Any]) -> None:
    """Refuse what cannot be done, before a job is queued."""
    mode = params.get("mode")
    if mode not in MODES:
        raise RestoreRefused(f"restore modes for an agent backup are {', '.join(MODES)}")
    database = point.details.get("database")
    if mode == "agent_original" and params.get("confirm") != database:
        raise RestoreRefused(
            f"restoring over {database} dismounts it and replaces it with its state at "
            f"{point.captured_at:%Y-%m-%d %H:%M} UTC; confirm by typing the database's name"
        )
    if mode == "agent_path" and not params.get("path"):
        raise RestoreRefused("a restore to another path needs params.path")
    upto = params.get("upto_generation")
    lo, hi = point.details.get("log_range") or (None, None)
    if upto is not None and (not isinstance(upto, int) or hi is None or upto > hi):
        raise RestoreRefused(f"restore point {point.id} holds logs up to generation {hi}")


def chain_of(session, point: RestorePoint) -> list[RestorePoint]:
    """The full this point builds on, then each incremental up to the point, oldest first."""
    chain = [point]
    while chain[0].details.get("base_point"):
        base = session.get(RestorePoint, chain[0].details["base_point"])
        if base is None or base.status != RestorePointStatus.AVAILABLE:
            raise PermanentError(
                f"restore point {chain[0].id} builds on point {chain[0].details['base_point']}, "
                "which is gone: the chain is broken"
            )
        chain.insert(0, base)
    if chain[0].details.get("level") != "full":
        raise PermanentError(f"restore point {point.id} has no full backup to start from")
    return chain


def plan(session, repo, chain: list[RestorePoint], upto: int | None) -> list[dict[str, Any]]:
    """The groups of files the agent writes: the full's database and checkpoint, and the
    logs of every point of the chain (those past ``upto`` are left out by the agent)."""
    groups = []
    for index, point in enumerate(chain):
        wanted = ("database", "checkpoint", "logs") if index == 0 else ("logs",)
        for group in wanted:
            manifest_id = point.details["manifests"].get(group)
            if manifest_id is None:
                continue
            m = repo.load_manifest(manifest_id)
            if upto is not None and group == "logs":
                lo = point.details["log_range"][0]
                if lo > upto:
                    continue
            groups.append(
                {
                    "group": group,
                    "manifest": manifest_id,
                    "size": m.size,
                    "block_size": m.block_size,
                    "blocks": m.blocks,
                    "files": m.source.get("files", []),
                }
            )
    return groups


def run(ctx: JobContext) -> JobResult:
    mode = MODES[ctx.params["mode"]]
    upto = ctx.params.get("upto_generation")
    with ctx.db.session() as session:
        point = session.get(RestorePoint, ctx.params.get("restore_point_id"))
        if point is None or point.status != RestorePointStatus.AVAILABLE:
            raise PermanentError("the restore point is gone or expired")
        agent = svc.agent_of(session, point.server_id)
        if agent is None or not svc.is_online(agent):
            raise PermanentError("the server's agent is not online: start it in the guest")
        chain = chain_of(session, point)
        repository_id = chain[0].copies[0].connection_id
        database = point.details["database"]
        server_id, point_id = point.server_id, point.id
    repo = open_job_repository(ctx, repository_id)
    with ctx.db.session() as session:
        groups = plan(session, repo, [session.get(RestorePoint, c.id) for c in chain], upto)
        task = svc.create_task(
            session,
            server_id,
            ctx.job_id,
            "restore",
            {
                "database": database,
                "mode": mode,
                "path": ctx.params.get("path"),
                "upto_generation": upto,
                "groups": groups,
                "repository_id": repository_id,
                "digest_key": digest_key(repo),
            },
        )
        task_id = task.id
    ctx.add_leftover({"kind": "agent_task", "task": task_id})
    ctx.step("restore", f"the agent restores {database} ({mode}) from restore point {point_id}")
    task = agent_backup._follow(ctx, task_id, until=(p.DONE,))
    result = task.report.get("result") or {}
    with ctx.db.session() as session:
        record(
            session,
            Actor(ctx.params.get("requested_by", "system"), "user"),
            f"restore.{ctx.params['mode']}",
            "restore_point",
            point_id,
            job=ctx.job_id,
            database=database,
            path=result.get("path"),
            upto_generation=upto,
        )
        ctx.clear_leftovers(session)
    ctx.progress(percent=100)
    return JobResult(
        message=f"{database} restored ({mode}) to {result.get('path')}, recovered and checked",
        details={"restore_point_id": point_id, "chain": [c.id for c in chain], **result},
    )


def cleanup(ctx: JobContext, leftovers: list[dict[str, Any]]) -> None:
    for item in leftovers:
        if item.get("kind") == "agent_task":
            with ctx.db.session() as session:
                svc.move(
                    session, item["task"], (p.QUEUED, p.RUNNING), p.FAILED, error="job stopped"
                )


AGENT = register(
    RestoreMode(
        names=tuple(MODES),
        applies_to=lambda point: point is not None and is_agent_point(point),
        capabilities=(CAPABILITY,),
        run=run,
        confirm=confirm,
        cleanup=cleanup,
    )
)
