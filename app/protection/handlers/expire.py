"""Retention in the repository, then garbage collection: the ``expire`` job.

Per policy and protected thing (a server or one database), the restore points with a copy in
the repository are ranked by the policy's keep-last-N plus daily/weekly/monthly/yearly (GFS)
schedule. Those that fall out lose their repository copy (the catalog first, then the
manifest) unless a legal hold or compliance retention keeps them; a restore point with no copy
left is marked expired. Restore points of a deleted policy are kept (nothing says otherwise).

The manifests of retired copies are deleted, also those an earlier run retired but was
killed before deleting. Then manifests no catalog copy names (a backup that crashed after
saving its manifest and before cataloging it) are removed once older than ``ORPHAN_GRACE``,
garbage collection reclaims the chunks nothing needs any more, and the repository's usage
is recorded.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Connection, Job, Policy, RepositoryUsage, RestorePoint, RestorePointCopy
from app.db.types import utcnow
from app.domain.connections import ConnectionKind
from app.domain.jobs import JobKind, JobState
from app.domain.protection import CopyLocation
from app.domain.retention import keep_by_schedule, removal_blocker
from app.jobs.context import JobContext, JobResult, PermanentError
from app.jobs.enqueue import enqueue
from app.jobs.handlers import register
from app.jobs.scheduler import SCHEDULER_ACTOR
from app.mailboxes.verify import mark_lost
from app.protection.catalog.copies import retire_copies
from app.protection.catalog.holds import holds_by_point
from app.repository import Repository, RepositoryError
from app.repository.connection import open_job_repository
from app.repository.gc import GRACE_S, GcReport, collect_garbage

log = logging.getLogger(__name__)

# A backup saves each disk's manifest, then catalogs the restore point when all are done;
# a manifest without a catalog entry is only an orphan once it is older than any backup runs.
ORPHAN_GRACE = timedelta(days=3)


@dataclass
class ExpireReport:
    expired: list[int] = field(default_factory=list)  # restore points that lost their copy
    kept: dict[int, str] = field(default_factory=dict)  # restore point -> why it stays
    removed_manifests: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)


def repository_copies(session: Session, repository_id: int) -> list[RestorePointCopy]:
    return list(
        session.scalars(
            select(RestorePointCopy).where(
                RestorePointCopy.connection_id == repository_id,
                RestorePointCopy.location == CopyLocation.REPOSITORY,
                RestorePointCopy.live,
            )
        )
    )


def _points_being_read(session: Session) -> set[int]:
    """Restore points a queued or running restore or verify job reads: expiring them now
    would pull the blocks from under a restore half-way through writing a disk."""
    params = session.scalars(
        select(Job.params).where(
            Job.kind.in_((JobKind.RESTORE, JobKind.VERIFY)),
            Job.state.in_((JobState.QUEUED, JobState.RUNNING)),
        )
    )
    return {p["restore_point_id"] for p in params if p and p.get("restore_point_id")}


def expire_repository(
    session: Session, repo: Repository, *, now: datetime | None = None
) -> ExpireReport:
    """Apply every policy's repository retention; commits the catalog before deleting."""
    now = now or utcnow()
    report = ExpireReport()
    copies = repository_copies(session, repo.id)
    points = {c.restore_point_id: c.restore_point for c in copies}
    policies = {
        p.id: p
        for p in session.scalars(
            select(Policy).where(Policy.id.in_({p.policy_id for p in points.values()}))
        )
    }
    series: dict[tuple, list[RestorePoint]] = defaultdict(list)
    for point in points.values():
        if point.policy_id in policies:
            series[(point.policy_id, point.server_id, point.database_id)].append(point)
    candidates: list[RestorePoint] = []
    for (policy_id, _s, _d), members in series.items():
        policy = policies[policy_id]
        members.sort(key=lambda p: (p.captured_at, p.id))
        keep = keep_by_schedule(
            [p.captured_at for p in members],
            last=policy.keep_last,
            daily=policy.keep_daily,
            weekly=policy.keep_weekly,
            monthly=policy.keep_monthly,
            yearly=policy.keep_yearly,
        )
        candidates += [p for i, p in enumerate(members) if i not in keep]
    holds = holds_by_point(session, candidates) if candidates else {}
    pinned = repo.pinned_manifests()
    being_read = _points_being_read(session)
    by_point: dict[int, list[RestorePointCopy]] = defaultdict(list)
    for c in copies:  # a VM image has one copy (one manifest) per disk
        by_point[c.restore_point_id].append(c)
    for point in sorted(candidates, key=lambda p: p.id):
        mine = by_point[point.id]
        blocker = removal_blocker(now, point.retain_until, holds.get(point.id, []))
        uses = {pinned[c.reference] for c in mine if c.reference in pinned}
        if blocker is None and uses:
            blocker = "a running backup builds on it" if "write" in uses else "a download reads it"
        if blocker is None and point.id in being_read:
            blocker = "a restore or verify job is reading it"
        if blocker is None and repo.immutable_days:
            # The store's own date (a reuse may have moved it on), never a guess.
            ends = [u for c in mine if (u := repo.locked_until(c.reference)) is not None]
            if ends:
                blocker = f"immutable until {max(ends):%Y-%m-%d %H:%M} UTC"
        if blocker:
            report.kept[point.id] = blocker
            continue
        retire_copies(
            session,
            point,
            mine,
            now=now,
            reason="repository retention",
            manifests=[c.reference for c in mine],
        )
        report.expired.append(point.id)
    # The catalog forgets the copies first: a crash now leaves manifests the catalog calls
    # expired, never a catalog entry whose manifest is gone.
    session.commit()
    for manifest_id in retired_manifests(session, repo):
        try:
            repo.delete_manifest(manifest_id)
            report.removed_manifests.append(manifest_id)
        except RepositoryError as exc:
            log.warning("repository %s: manifest %s stays for now: %s", repo.id, manifest_id, exc)
    report.orphans = remove_orphan_manifests(session, repo, now=now)
    return report


def retired_manifests(session: Session, repo: Repository) -> list[str]:
    """Manifests still in the repository whose catalog copy was retired: this run's, and any
    an earlier run committed but was killed before deleting (the catalog decided: no grace,
    unlike an orphan that no catalog entry names yet)."""
    retired = set(
        session.scalars(
            select(RestorePointCopy.reference).where(
                RestorePointCopy.connection_id == repo.id,
                RestorePointCopy.location == CopyLocation.REPOSITORY,
                RestorePointCopy.removed_at.is_not(None),
            )
        )
    )
    if not retired:
        return []
    live = {c.reference for c in repository_copies(session, repo.id)}
    return sorted((retired - live) & set(repo.list_manifests()))


def remove_orphan_manifests(
    session: Session, repo: Repository, *, now: datetime, grace: timedelta = ORPHAN_GRACE
) -> list[str]:
    named = {c.reference for c in repository_copies(session, repo.id)}
    removed = []
    for manifest_id in repo.list_manifests():
        if manifest_id in named:
            continue
        try:
            manifest = repo.load_manifest(manifest_id)
        except RepositoryError:
            continue  # unreadable: verify reports it; never guess
        if now - manifest.created_at < grace:
            continue
        try:
            repo.delete_manifest(manifest_id)
        except RepositoryError:
            continue
        removed.append(manifest_id)
    return removed


def record_usage(session: Session, repo: Repository, gc: GcReport, *, now: datetime) -> None:
    usage = session.get(RepositoryUsage, repo.id) or RepositoryUsage(connection_id=repo.id)
    usage.measured_at = now
    usage.images = gc.images
    usage.chunks = gc.remaining_chunks
    usage.stored_bytes = gc.remaining_bytes
    usage.logical_bytes = gc.logical_bytes
    usage.last_gc_at = now
    usage.last_gc_removed_chunks = gc.removed_chunks
    usage.last_gc_freed_bytes = gc.freed_bytes
    session.add(usage)


def run_expire(ctx: JobContext) -> JobResult:
    repository_id = ctx.params.get("repository_id")
    if not isinstance(repository_id, int):
        raise PermanentError("an expire job needs params.repository_id")
    grace_s = float(ctx.params.get("gc_grace_s", GRACE_S))
    ctx.step("retention")
    with ctx.db.session() as session:
        try:
            repo = open_job_repository(ctx, repository_id, session)
        except RepositoryError as exc:
            raise PermanentError(str(exc)) from exc
        report = expire_repository(session, repo)
    ctx.check_cancelled()
    ctx.step("garbage collection")
    with ctx.db.session() as session:
        gc = collect_garbage(repo, session, grace_s=grace_s)
        record_usage(session, repo, gc, now=utcnow())
        # Damage found on the way (a pack cut short, a pack nothing accounts for): the
        # mailbox points that held what is now missing say so (the next backup fetches it
        # from the server again).
        damaged_mail = (
            mark_lost(session, repo, repository_id)
            if gc.damaged_rebuilt or gc.damaged_packs
            else []
        )
    for pack_id in gc.rebuilt_indexes:
        ctx.warning(
            f"pack {pack_id} had no whole index: written again from the pack itself"
            + (
                " (the pack is damaged; what lay past the damage is lost)"
                if pack_id in gc.damaged_rebuilt
                else ""
            )
        )
    for point_id in damaged_mail:
        ctx.warning(f"mailbox restore point {point_id} lost messages: marked damaged")
    if report.expired:
        ctx.event(f"expired restore points: {', '.join(map(str, report.expired))}")
    for point_id, why in sorted(report.kept.items()):
        ctx.event(f"restore point {point_id} stays: {why}")
    if gc.locked_objects:
        ctx.event(
            f"{gc.locked_objects} object(s) ({gc.locked_bytes} bytes) no longer needed stay "
            f"locked (immutable repository): reclaimable from {gc.reclaim_at:%Y-%m-%d %H:%M} UTC"
        )
    for pack_id in gc.damaged_packs:
        ctx.warning(
            f"pack {pack_id} is damaged (its frames do not read and no whole index says what "
            "it holds) and may hold needed mail: kept, not swept; check the repository's disk"
        )
    ctx.progress(percent=100)
    return JobResult(
        message=(
            f"{len(report.expired)} restore point(s) expired, {gc.removed_chunks} chunk(s) "
            f"removed, {gc.freed_bytes} bytes freed"
        ),
        details={
            "expired": report.expired,
            "kept": {str(k): v for k, v in report.kept.items()},
            "removed_manifests": report.removed_manifests,
            "orphan_manifests": report.orphans,
            "removed_chunks": gc.removed_chunks,
            "freed_bytes": gc.freed_bytes,
            "remaining_chunks": gc.remaining_chunks,
            "stored_bytes": gc.remaining_bytes,
            "damaged_packs": gc.damaged_packs,
            "rebuilt_indexes": gc.rebuilt_indexes,
            "damaged_mailbox_points": damaged_mail,
            "locked_objects": gc.locked_objects,
            "locked_bytes": gc.locked_bytes,
            "reclaim_at": gc.reclaim_at.isoformat() if gc.reclaim_at else None,
        },
    )


def schedule_expiry(session: Session, now: datetime, every_minutes: int) -> list[int]:
    """An expire job per repository whose last one is older than ``every_minutes``."""
    return _schedule_per_repository(session, now, JobKind.EXPIRE, every_minutes, {})


def _schedule_per_repository(
    session: Session, now: datetime, kind: JobKind, every_minutes: int, params: dict[str, Any]
) -> list[int]:
    window = now - timedelta(minutes=every_minutes)
    recent = session.scalars(
        select(Job.params).where(
            Job.kind == kind,
            (Job.created_at >= window) | Job.state.in_((JobState.QUEUED, JobState.RUNNING)),
        )
    ).all()
    fresh = {(p or {}).get("repository_id") for p in recent}
    created = []
    for connection_id in session.scalars(
        select(Connection.id).where(Connection.kind == ConnectionKind.REPOSITORY)
    ):
        if connection_id in fresh:
            continue
        job = enqueue(
            session,
            kind,
            actor=SCHEDULER_ACTOR,
            params={"repository_id": connection_id, "scheduled": True, **params},
            at=now,
        )
        created.append(job.id)
    return created


register(JobKind.EXPIRE, run_expire)
