from __future__ import annotations

import pytest

from app.domain.exchange_attribute import DatabasePlacement, PlacementError, parse


def test_reads_several_databases_with_and_without_log_disks():
    assert parse("DB11=disk:2016;logs:2032 | DB12=disk:2017") == [
        DatabasePlacement("DB11", 2016, 2032),
        DatabasePlacement("DB12", 2017, None),
    ]
    assert parse("  DB01 = disk : 2000 ; logs : 2001  ") == [DatabasePlacement("DB01", 2000, 2001)]
    assert parse("") == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("DB01", "expected NAME=disk:KEY"),
        ("DB01=logs:2001", "says no 'disk:KEY'"),
        ("DB01=disk:abc", "cannot read 'disk:abc'"),
        ("DB01=disk:1;disk:2", "given twice"),
        ("DB01=disk:1 | DB01=disk:2", "listed twice"),
        ("DB01=size:5;disk:1", "cannot read 'size:5'"),
        ("=disk:1", "expected NAME"),
    ],
)
def test_bad_values_say_where(value, message):
    with pytest.raises(PlacementError, match=message):
        parse(value)
