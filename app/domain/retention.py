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
