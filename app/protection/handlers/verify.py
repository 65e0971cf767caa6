"""Verify jobs: re-read and re-hash a restore point's blocks in the repository.

Mailbox restore points are verified the same way, a message at a time
(``params.mailbox_restore_point_id``, or with the repository's or the policy's points;
app/mailboxes/verify.py).

A ``verify`` job checks one restore point fully (``params.restore_point_id``) or, when
scheduled, every available restore point of a repository on a random share of its blocks
(``params.repository_id`` and ``params.sample``, e.g. 0.1). Each restore point ends verified
or damaged (``RestorePoint.verification``, ``verified_at``, ``details.verification``); a
damaged one is reported through the notifier (``restore_point.damaged``).

A damaged chunk is moved to ``quarantine/`` in the repository: the next backup holding the
same data stores it afresh instead of deduplicating against the bad copy, and a later verify
of an older restore point then finds it whole again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import SYSTEM, record
from app.db.models import MailboxRestorePoint, RestorePoint, RestorePointCopy
from app.db.types import utcnow
from app.domain.jobs import JobKind
from app.domain.protection import CopyLocation, RestorePointStatus, Verification
from app.jobs.context import JobContext, JobResult, PermanentError
from app.jobs.handlers import register
from app.mailboxes.verify import verify_mailbox_point
from app.protection.handlers.expire import _schedule_per_repository
from app.repository import Repository, RepositoryError
from app.repository.connection import open_job_repository
from app.repository.image_writer import mark_verified


@dataclass
class PointVerification:
    restore_point_id: int
    ok: bool
    blocks_checked: int
    damaged: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def repository_copies(point: RestorePoint) -> list[RestorePointCopy]:
    """The live repository copies: one per disk for a VM image, one for a volume."""
    return point.live_copies(CopyLocation.REPOSITORY)


def repository_copy(point: RestorePoint) -> RestorePointCopy | None:
    copies = repository_copies(point)
    return copies[0] if copies else None


def verify_restore_point(
    session: Session,
    repo: Repository,
    point: RestorePoint,
    *,
    sample: float = 1.0,
    now: datetime | None = None,
    progress=None,
) -> PointVerification:
    """Check one restore point's repository copy and record the outcome on it."""
    now = now or utcnow()
    copies = [c for c in repository_copies(point) if c.connection_id in (repo.id, None)]
    if not copies:
        raise RepositoryError(f"restore point {point.id} has no copy in the repository")
    result = PointVerification(point.id, ok=True, blocks_checked=0)
    errors = []
    for copy in copies:
        try:
            manifest = repo.load_manifest(copy.reference)
        except RepositoryError as exc:
            result.ok = False
            errors.append(str(exc))
            continue
        problems = repo.verify_image(manifest, sample=sample, progress=progress)
        result.blocks_checked += _checked_blocks(manifest, sample)
        if problems:
            result.ok = False
            result.damaged += [
                {"image": manifest.id, "block": p.index, "digest": p.digest, "reason": p.reason}
                for p in problems
            ]
            for digest in {p.digest for p in problems}:
                quarantine(repo, digest)
    result.error = "; ".join(errors) or None
    point.verified_at = now
    point.details = {
        **(point.details or {}),
        "verification": {
            "at": now.isoformat(),
            "sample": sample,
            "blocks_checked": result.blocks_checked,
            "damaged_blocks": result.damaged[:50],
            "damaged_count": len(result.damaged),
            "error": result.error,
        },
    }
    if result.ok:
        point.verification = Verification.VERIFIED
        if point.status == RestorePointStatus.DAMAGED:
            point.status = RestorePointStatus.AVAILABLE  # its chunks were stored afresh
    else:
        point.verification = Verification.DAMAGED
        others = [c for c in point.live_copies() if c not in copies]
        if not others:
            point.status = RestorePointStatus.DAMAGED
    record(
        session,
        SYSTEM,
        "restore_point.verify",
        "restore_point",
        point.id,
        outcome="verified" if result.ok else "damaged",
        sample=sample,
        damaged_blocks=len(result.damaged),
    )
    return result


def _checked_blocks(manifest, sample: float) -> int:
    stored = sum(1 for d in manifest.blocks if d is not None)
    return stored if sample >= 1.0 else min(stored, max(1, round(stored * sample)))


def quarantine(repo: Repository, digest: str) -> None:
    """Move a damaged chunk aside so a later backup stores the data again."""
    repo.chunks.quarantine(digest)


def run_verify(ctx: JobContext) -> JobResult:
    params = ctx.params
    sample = float(params.get("sample", 1.0))
    if not 0.0 < sample <= 1.0:
        raise PermanentError("params.sample must be in (0, 1]")
    mailbox_points: list[int] = []
    with ctx.db.session() as session:
        if params.get("mailbox_restore_point_id") is not None:
            mpoint = session.get(MailboxRestorePoint, params["mailbox_restore_point_id"])
            if mpoint is None:
                raise PermanentError(
                    f"mailbox restore point {params['mailbox_restore_point_id']} does not exist"
                )
            repository_id, point_ids, mailbox_points = mpoint.repository_id, [], [mpoint.id]
        elif params.get("restore_point_id") is not None:
            point = session.get(RestorePoint, params["restore_point_id"])
            if point is None:
                raise PermanentError(f"restore point {params['restore_point_id']} does not exist")
            copy = repository_copy(point)
            if copy is None or copy.connection_id is None:
                raise PermanentError(f"restore point {point.id} has no copy in a repository")
            repository_id, point_ids = copy.connection_id, [point.id]
        elif isinstance(params.get("repository_id"), int):
            repository_id = params["repository_id"]
            point_ids = sorted(
                set(
                    session.scalars(
                        select(RestorePointCopy.restore_point_id)
                        .join(RestorePoint)
                        .where(
                            RestorePointCopy.connection_id == repository_id,
                            RestorePointCopy.location == CopyLocation.REPOSITORY,
                            RestorePointCopy.live,
                            RestorePoint.status != RestorePointStatus.EXPIRED,
                        )
                    )
                )
            )
            mailbox_points = _mailbox_points(session, repository_id=repository_id)
        elif ctx.policy_id is not None:
            rows = session.execute(
                select(RestorePointCopy.restore_point_id, RestorePointCopy.connection_id)
                .join(RestorePoint)
                .where(
                    RestorePoint.policy_id == ctx.policy_id,
                    RestorePointCopy.location == CopyLocation.REPOSITORY,
                    RestorePointCopy.live,
                    RestorePoint.status != RestorePointStatus.EXPIRED,
                )
                .order_by(RestorePointCopy.restore_point_id)
            ).all()
            mailbox_rows = session.execute(
                select(MailboxRestorePoint.id, MailboxRestorePoint.repository_id).where(
                    MailboxRestorePoint.policy_id == ctx.policy_id,
                    MailboxRestorePoint.status == RestorePointStatus.AVAILABLE,
                )
            ).all()
            rows = list(rows) + list(mailbox_rows)
            if not rows:
                raise PermanentError(f"policy {ctx.policy_id} has nothing in a repository")
            if len({c for _p, c in rows}) > 1:
                raise PermanentError("the policy's restore points are in several repositories")
            mailbox_points = sorted(p for p, _c in mailbox_rows)
            repository_id = rows[0][1]
            point_ids = sorted({p for p, _c in rows} - set(mailbox_points))
        else:
            raise PermanentError(
                "a verify job needs params.restore_point_id, params.repository_id or a policy"
            )
        try:
            repo = open_job_repository(ctx, repository_id, session)
        except RepositoryError as exc:
            raise PermanentError(str(exc)) from exc
    started = utcnow()
    verified, damaged = [], []
    for n, point_id in enumerate(point_ids):
        ctx.check_cancelled()
        ctx.progress(percent=100.0 * n / max(1, len(point_ids)), step=f"restore point {point_id}")
        with ctx.db.session() as session:
            point = session.get(RestorePoint, point_id)
            if point is None or repository_copy(point) is None:
                continue  # expired meanwhile
            result = verify_restore_point(
                session,
                repo,
                point,
                sample=sample,
                progress=lambda done: ctx.progress(bytes_done=done),
            )
        if result.ok:
            verified.append(point_id)
            continue
        damaged.append(point_id)
        first = result.damaged[0] if result.damaged else None
        ctx.warning(
            f"restore point {point_id} is damaged: "
            + (
                f"{len(result.damaged)} block(s), first block {first['block']} "
                f"({first['digest']}): {first['reason']}"
                if first
                else str(result.error)
            )
        )
    mail_verified, mail_damaged = [], []
    for point_id in mailbox_points:
        ctx.check_cancelled()
        ctx.progress(step=f"mailbox restore point {point_id}")
        with ctx.db.session() as session:
            mpoint = session.get(MailboxRestorePoint, point_id)
            if mpoint is None or mpoint.status != RestorePointStatus.AVAILABLE:
                continue
            outcome = verify_mailbox_point(session, repo, mpoint, sample=sample)
        if outcome.ok:
            mail_verified.append(point_id)
            continue
        mail_damaged.append(point_id)
        first = outcome.damaged[0]
        ctx.warning(
            f"mailbox restore point {point_id} is damaged: {len(outcome.damaged)} message(s), "
            f"first archive message {first['message']}: {first['reason']}"
        )
    # From now on a backup checks once more the chunks it carries over (image_writer.py).
    mark_verified(repo.store, started)
    ctx.progress(percent=100)
    total_ok, total_bad = len(verified) + len(mail_verified), len(damaged) + len(mail_damaged)
    return JobResult(
        partial=bool(total_bad),
        message=f"{total_ok} restore point(s) verified, {total_bad} damaged",
        details={
            "verified": verified,
            "damaged": damaged,
            "mailbox_verified": mail_verified,
            "mailbox_damaged": mail_damaged,
            "sample": sample,
        },
    )


def _mailbox_points(session: Session, *, repository_id: int) -> list[int]:
    return list(
        session.scalars(
            select(MailboxRestorePoint.id)
            .where(
                MailboxRestorePoint.repository_id == repository_id,
                MailboxRestorePoint.status == RestorePointStatus.AVAILABLE,
            )
            .order_by(MailboxRestorePoint.id)
        )
    )


def schedule_verification(
    session: Session, now: datetime, every_minutes: int, sample: float
) -> list[int]:
    """A sampled verify job per repository whose last one is older than ``every_minutes``."""
    return _schedule_per_repository(session, now, JobKind.VERIFY, every_minutes, {"sample": sample})


register(JobKind.VERIFY, run_verify)
