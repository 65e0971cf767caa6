"""What may remove a restore point, and what forbids it. Legal holds win over everything."""

from __future__ import annotations

from datetime import datetime


def removal_blocker(now: datetime, retain_until: datetime | None, holds: list[str]) -> str | None:
    """Why a restore point may not be removed now, or None when it may."""
    if holds:
        return f"it is under legal hold ({', '.join(holds)})"
    if retain_until is not None and retain_until > now:
        return f"compliance retention keeps it until {retain_until:%Y-%m-%d %H:%M} UTC"
    return None


def keep_by_schedule(
    captured: list[datetime],
    *,
    last: int = 0,
    daily: int = 0,
    weekly: int = 0,
    monthly: int = 0,
    yearly: int = 0,
) -> set[int]:
    """Which restore points a keep-last-N plus GFS schedule keeps (indexes into ``captured``).

    The newest ``last`` are kept; then for each of the newest ``daily`` days (ISO ``weekly``
    weeks, ``monthly`` months, ``yearly`` years) that has a restore point, its newest one.
    The newest restore point is always kept, so a schedule never empties a series.
    """
    order = sorted(range(len(captured)), key=lambda i: captured[i], reverse=True)
    keep = set(order[: max(1, last)])
    periods = (
        (daily, lambda t: (t.year, t.month, t.day)),
        (weekly, lambda t: tuple(t.isocalendar())[:2]),
        (monthly, lambda t: (t.year, t.month)),
        (yearly, lambda t: (t.year,)),
    )
    for count, period in periods:
        seen: set[tuple] = set()
        for i in order:
            if len(seen) >= count:
                break
            key = period(captured[i])
            if key not in seen:
                seen.add(key)
                keep.add(i)
    return keep
