"""Jobs as the operator sees them: what kind, and where they are in their life."""

from enum import StrEnum


class JobKind(StrEnum):
    BACKUP = "backup"
    RESTORE = "restore"
    VERIFY = "verify"
    EXPIRE = "expire"
    COPY = "copy"
    SYNC = "sync"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PARTIALLY_SUCCEEDED = "partially_succeeded"

    @property
    def finished(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


def run_state(parent: JobState, children: list[JobState]) -> JobState:
    """The state of a run: a job and the jobs it queued (a policy's backup and its per-server
    jobs). It has succeeded only when everything under it did; it runs while any part runs."""
    if not parent.finished or not children:
        return parent
    if any(not c.finished for c in children):
        return JobState.RUNNING
    # The parent only queued the work: the outcome is its children's, made partial if the
    # parent itself could not queue everything.
    states = set(children)
    if states == {JobState.SUCCEEDED}:
        return JobState.SUCCEEDED if parent == JobState.SUCCEEDED else JobState.PARTIALLY_SUCCEEDED
    if states & {JobState.SUCCEEDED, JobState.PARTIALLY_SUCCEEDED}:
        return JobState.PARTIALLY_SUCCEEDED
    return JobState.CANCELLED if states == {JobState.CANCELLED} else JobState.FAILED


class EventLevel(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
