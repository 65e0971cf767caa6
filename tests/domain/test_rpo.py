from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.domain.rpo import Protected, compliance_by_day

NOW = datetime(2026, 11, 25, 23, 59, tzinfo=UTC)


def test_hourly_backups_meet_a_two_hour_objective_every_day():
    start = NOW - timedelta(days=3)
    captures = [start + timedelta(hours=h) for h in range(0, 3 * 24 + 24)]
    days = compliance_by_day([Protected(captures, 2 * 3600, start)], NOW, days=3)
    assert [d.percent for d in days] == [100.0, 100.0, 100.0]


def test_a_gap_shows_as_the_share_of_the_day_out_of_objective():
    start = NOW.replace(hour=0, minute=0) - timedelta(days=1)
    # Backups every hour, except none from 06:00 to 18:00 on the last day.
    captures = [start + timedelta(hours=h) for h in range(48) if not 24 + 6 <= h < 24 + 18]
    days = compliance_by_day([Protected(captures, 3600, start)], NOW, days=2)
    assert days[0].percent == 100.0
    # Sampled hourly up to now (01:00 to 23:00: 23 moments); out of objective from 07:00
    # through 17:00, 11 of them.
    assert round(days[1].percent, 1) == round(100 * 12 / 23, 1)


def test_days_before_protection_began_have_no_figure():
    since = NOW - timedelta(hours=5)
    days = compliance_by_day([Protected([], 3600, since)], NOW, days=2)
    assert days[0].percent is None
    assert days[1].percent == 0.0  # protected since this evening, never backed up
