"""A policy-wide job's outcome follows its children's.

The policy run (``dispatch``) ends as soon as it has queued one backup job per target, as
"succeeded": it did its part. When the last of its children ends, the parent takes their
worst outcome (all succeeded: succeeded; none did: failed; otherwise partially succeeded)
with an event saying so, so a policy's run never says succeeded while a backup of it
failed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.db.models import Job, JobEvent
from app.domain.jobs import EventLevel, JobState

_OK = (JobState.SUCCEEDED, JobState.PARTIALLY_SUCCEEDED)


def settle_parent(session: Session, job_id: int, now: datetime) -> JobState | None:
    """After ``job_id`` ended: its parent's new state once every sibling has ended (or its
    own, when it is a parent whose children all ended before it did)."""
    parent_id = session.scalar(select(Job.parent_id).where(Job.id == job_id))
    return _settle(session, parent_id if parent_id is not None else job_id, now)


def _settle(session: Session, parent_id: int, now: datetime) -> JobState | None:
    states = list(session.scalars(select(Job.state).where(Job.parent_id == parent_id)))
    if not states or not all(s.finished for s in states):
        return None
    parent = session.get(Job, parent_id)
    if parent is None or parent.state not in _OK:
        return None  # still running its own part, failed or cancelled: it says so itself
    good = sum(s == JobState.SUCCEEDED for s in states)
    some = sum(s in _OK for s in states)
    if good == len(states):
        state, level = JobState.SUCCEEDED, EventLevel.INFO
    elif some == 0:
        state, level = JobState.FAILED, EventLevel.ERROR
    else:
        state, level = JobState.PARTIALLY_SUCCEEDED, EventLevel.WARNING
    if state != parent.state:
        parent.state = state
        session.execute(
            insert(JobEvent).values(
                job_id=parent_id,
                at=now,
                level=level,
                step="",
                message=f"{good} of {len(states)} job(s) it queued succeeded",
            )
        )
    return state
