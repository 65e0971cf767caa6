"""Storage arrays: volumes by NAA id, consistency-group snapshots, clones, revert, reading
snapshots for the off-host copy. ``open_array`` builds the driver an array connection names.

Drivers: ``btrfs`` (the reference array: a Linux box with btrfs, serving LUNs over iSCSI).
Vendor drivers (NetApp ONTAP, Pure) plug in behind :class:`ArrayDriver` and ``DRIVERS``.
"""

from __future__ import annotations

from typing import Any

from .btrfs import BtrfsArray
from .driver import (
    Area,
    ArrayDriver,
    ArrayError,
    ArraySnapshot,
    ArrayUnavailable,
    Capabilities,
    InvalidName,
    NotSupported,
    OutOfSpace,
    SnapshotNotFound,
    Volume,
    VolumeNotFound,
    derived_naa,
    naa_of_lun,
    normalise_naa,
)

DRIVERS: dict[str, type[ArrayDriver]] = {"btrfs": BtrfsArray}


def open_array(options: dict[str, Any], name: str | None = None) -> ArrayDriver:
    """The driver for an array connection's options (``driver`` and its settings)."""
    driver = str(options.get("driver") or "")
    if driver not in DRIVERS:
        known = ", ".join(sorted(DRIVERS))
        raise ArrayUnavailable(
            f"array driver {driver!r} is not known; set option driver to one of: {known}"
        )
    if driver == "btrfs":
        path = options.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ArrayUnavailable("a btrfs array needs option path: the absolute mount path")
        return BtrfsArray(path, name)
    return DRIVERS[driver](**options)  # pragma: no cover - vendor drivers take their options


__all__ = [
    "DRIVERS",
    "Area",
    "ArrayDriver",
    "ArrayError",
    "ArraySnapshot",
    "ArrayUnavailable",
    "BtrfsArray",
    "Capabilities",
    "InvalidName",
    "NotSupported",
    "OutOfSpace",
    "SnapshotNotFound",
    "Volume",
    "VolumeNotFound",
    "derived_naa",
    "naa_of_lun",
    "normalise_naa",
    "open_array",
]
