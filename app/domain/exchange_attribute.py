"""The ``bulwark.exchange`` vSphere custom attribute: where each database and its logs live.

Format, one entry per database separated by ``|``::

    DB01=disk:2016;logs:2032 | DB02=disk:2017;logs:2033

``disk`` is the device key of the disk holding the database, ``logs`` (optional) that of the
disk holding its transaction logs. Spaces around separators are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ATTRIBUTE_NAME = "bulwark.exchange"
_NAME = re.compile(r"^[A-Za-z0-9][\w .@-]{0,63}$")


class PlacementError(ValueError):
    """The attribute's value cannot be read; the message says where."""


@dataclass(frozen=True)
class DatabasePlacement:
    name: str
    database_disk_key: int
    log_disk_key: int | None


def parse(value: str) -> list[DatabasePlacement]:
    placements: list[DatabasePlacement] = []
    for n, entry in enumerate(filter(None, (e.strip() for e in value.split("|"))), start=1):
        name, sep, rest = entry.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise PlacementError(f"entry {n} ('{entry}'): expected NAME=disk:KEY;logs:KEY")
        fields: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in rest.split(";"))):
            key, sep, number = (x.strip() for x in part.partition(":"))
            if key not in ("disk", "logs") or not sep or not number.isdigit():
                raise PlacementError(f"entry {n} ('{entry}'): cannot read '{part}'")
            if key in fields:
                raise PlacementError(f"entry {n} ('{entry}'): '{key}' given twice")
            fields[key] = int(number)
        if "disk" not in fields:
            raise PlacementError(f"entry {n} ('{entry}'): says no 'disk:KEY'")
        if any(p.name == name for p in placements):
            raise PlacementError(f"database '{name}' is listed twice")
        placements.append(DatabasePlacement(name, fields["disk"], fields.get("logs")))
    return placements
