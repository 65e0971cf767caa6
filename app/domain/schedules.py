"""Cron schedules a policy may keep: valid, and running at least once in the next years.

``croniter.is_valid`` only checks the syntax, so ``0 0 30 2 *`` (30 February) passes and
then fails every time anyone asks for its next run. A schedule is accepted only when it has
a run within ``HORIZON_YEARS`` (long enough for 29 February).
"""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import CroniterError, croniter

HORIZON_YEARS = 5


def schedule_problem(expr: str, now: datetime | None = None) -> str | None:
    """Why ``expr`` cannot be a policy's schedule, or None when it can."""
    if not croniter.is_valid(expr):
        return f"'{expr}' is not a valid cron expression (e.g. '0 2 * * *')"
    now = now or datetime.now(UTC)
    try:
        upcoming = croniter(expr, now).get_next(datetime)
    except (CroniterError, ValueError, OverflowError):
        upcoming = None
    if upcoming is None or upcoming.year - now.year > HORIZON_YEARS:
        return f"'{expr}' never runs in the next {HORIZON_YEARS} years (is the date impossible?)"
    return None
