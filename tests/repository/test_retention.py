"""Keep-last-N plus GFS: which restore points a schedule keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.domain.retention import keep_by_schedule

START = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)  # a Thursday


def kept(times, **schedule):
    return sorted(times[i] for i in keep_by_schedule(times, **schedule))


def test_keep_last_keeps_the_newest():
    times = [START + timedelta(hours=h) for h in range(10)]
    assert kept(times, last=3) == times[-3:]


def test_the_newest_is_always_kept():
    times = [START + timedelta(hours=h) for h in range(3)]
    assert kept(times) == [times[-1]]


def test_daily_keeps_the_newest_of_each_of_the_last_days():
    # Four backups a day for five days.
    times = [START + timedelta(days=d, hours=h) for d in range(5) for h in (0, 4, 8, 12)]
    result = kept(times, last=1, daily=3)
    newest_of_day = [START + timedelta(days=d, hours=12) for d in (2, 3, 4)]
    assert result == newest_of_day


def test_weekly_monthly_yearly_stack():
    times = [START + timedelta(days=d) for d in range(0, 800, 1)]
    result = set(kept(times, last=2, daily=7, weekly=4, monthly=6, yearly=3))
    assert set(times[-2:]) <= result
    assert len([t for t in result if t >= times[-7]]) == 7  # the last seven days
    newest = times[-1]
    # Each of the last six months contributes its newest restore point.
    for back in range(6):
        month = (newest.year * 12 + newest.month - 1 - back) % 12 + 1
        year = (newest.year * 12 + newest.month - 1 - back) // 12
        in_month = [t for t in times if (t.year, t.month) == (year, month)]
        assert max(in_month) in result
    for year in {t.year for t in times}:
        assert max(t for t in times if t.year == year) in result
    # Nothing else: 2 + 7 days (overlapping) + 4 weeks + 6 months + 3 years, at most.
    assert len(result) <= 2 + 7 + 4 + 6 + 3


def test_unordered_input_and_empty_input():
    times = [START + timedelta(days=d) for d in (5, 1, 3)]
    assert kept(times, last=2) == sorted(times)[-2:]
    assert keep_by_schedule([], last=3) == set()
