"""The job table as a queue: claim with a lease, heartbeat, finish, retry, cancel.

``JobEngine`` is the one object workers, the API and tests use; its parts live beside it:
transactions.py (how statements reach the table, guarded updates with their events),
claiming.py (candidate selection and admission: capabilities, one job per Exchange server,
resource limits) and states.py (lease, progress, leftovers and every ending).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from app.db.session import Database
from app.db.types import utcnow
from app.jobs.claiming import (
    ClaimedJob,
    Claiming,
    ResourceLimits,
    capabilities_of,
    resource_key,
    resources_of,
)
from app.jobs.states import MAX_ERROR_CHARS, LeaseStatus, StateChanges, truncate_error
from app.jobs.transactions import PendingEvent

__all__ = [
    "MAX_ERROR_CHARS",
    "ClaimedJob",
    "JobEngine",
    "LeaseStatus",
    "PendingEvent",
    "ResourceLimits",
    "capabilities_of",
    "resource_key",
    "resources_of",
    "truncate_error",
]


class JobEngine(Claiming, StateChanges):
    """Queue operations on the ``jobs`` table; safe to share between threads.

    Statements go straight to the session's connection (Core), not through the ORM's
    execution path: nothing here needs ORM objects, and a job's overhead is mostly these
    calls."""

    def __init__(
        self,
        database: Database,
        *,
        lease_seconds: float = 60.0,
        retry_base_s: float = 30.0,
        retry_cap_s: float = 1800.0,
        limits: Mapping[str, int] | None = None,
        default_limits: Mapping[str, int] | None = None,
        clock: Callable[[], datetime] = utcnow,
        claim_batch: int = 20,
        max_scan: int = 200,
    ):
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.db = database
        self.lease = timedelta(seconds=lease_seconds)
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.limits = ResourceLimits(dict(limits or {}), dict(default_limits or {}))
        self.clock = clock
        self.claim_batch = max(1, claim_batch)
        self.max_scan = max(self.claim_batch, max_scan)
        # After a search for abandoned jobs finds none, the next one waits this long: a lease
        # only runs out after lease_seconds, so takeovers are late by a quarter lease at most,
        # and a busy worker saves a query per claim.
        self.abandoned_scan_interval = self.lease / 4
        self._no_abandoned_until: datetime | None = None
