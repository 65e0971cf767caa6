"""Recovery point objective compliance over time, measured from when restore points were
captured (the whitepaper: the RPO is stringent and must be measured, not hoped for)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from croniter import CroniterError, croniter


@dataclass(frozen=True)
class Protected:
    """One thing a policy protects: when its restore points were captured, and its objective."""

    captures: list[datetime]  # sorted, oldest first
    objective_s: float
    since: datetime  # when protection began (the policy's creation)


@dataclass(frozen=True)
class DayCompliance:
    day: date
    percent: float | None  # share of sampled moments within the objective; None: nothing due


def compliance_by_day(
    protected: list[Protected], now: datetime, days: int = 14, samples_per_day: int = 24
) -> list[DayCompliance]:
    """For each of the last ``days`` days (oldest first), the share of sampled moments at which
    the newest restore point of each protected thing was within its objective."""
    step = timedelta(days=1) / samples_per_day
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    result = []
    for d in range(days):
        day_start = start + timedelta(days=d)
        ok = total = 0
        for i in range(1, samples_per_day + 1):
            t = day_start + step * i
            if t > now:
                break
            for p in protected:
                if t < p.since:
                    continue
                total += 1
                newest = bisect.bisect_right(p.captures, t)
                if newest and (t - p.captures[newest - 1]).total_seconds() <= p.objective_s:
                    ok += 1
        result.append(DayCompliance(day_start.date(), 100.0 * ok / total if total else None))
    return result


def schedule_interval_s(expr: str | None, now: datetime) -> float | None:
    """The longest gap between runs of a cron schedule over its next runs: the recovery point
    objective a cron policy implies (a daily run cannot promise better than a day)."""
    if not expr or not croniter.is_valid(expr):
        return None
    it = croniter(expr, now)
    try:
        times = [it.get_next(datetime) for _ in range(9)]
    except CroniterError:  # a stored schedule with no next run (see app.domain.schedules)
        return None
    return max((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False))


def objective_s(
    rpo_minutes: int | None, cron: str | None, now: datetime, memo: dict[str, float | None]
) -> float | None:
    """A policy's recovery point objective in seconds: its stated RPO, or the longest gap of
    its schedule (``memo`` keeps one per expression: many servers share few schedules)."""
    if rpo_minutes is not None:
        return float(rpo_minutes) * 60
    if cron not in memo:
        memo[cron] = schedule_interval_s(cron, now)
    return memo[cron]
