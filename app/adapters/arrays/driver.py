"""The array driver interface, in the spirit of OpenStack Cinder's volume driver.

An array holds volumes (LUNs) known to vCenter by their NAA id; volumes that must be captured
at the same instant (an Exchange database and its log LUN) sit in one consistency group, and a
snapshot is always of a whole group. A driver lists volumes, takes, lists and deletes
snapshots, clones a snapshot into new volumes, reverts volumes to a snapshot, opens a
snapshot's or a clone's volume for reading (the off-host copy), and where it can, says which
areas changed between two snapshots. It reports what it supports and the space used.

Errors are :class:`ArrayError` subclasses whose text an operator can act on. No framework or
database code lives here.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAA_PATTERN = re.compile(r"^naa\.[0-9a-f]{16}([0-9a-f]{16})?$")


class ArrayError(Exception):
    """Something went wrong on the array. ``str(err)`` is operator-readable."""


class ArrayUnavailable(ArrayError):
    """The array cannot be reached or is not what its connection says."""


class VolumeNotFound(ArrayError):
    permanent = True  # another attempt finds it missing too

    def __init__(self, array: str, naa_id: str):
        self.naa_id = naa_id
        super().__init__(f"array {array} has no volume {naa_id}")


class SnapshotNotFound(ArrayError):
    permanent = True

    def __init__(self, array: str, snapshot_id: str):
        self.snapshot_id = snapshot_id
        super().__init__(f"array {array} has no snapshot {snapshot_id}")


class NotSupported(ArrayError):
    """The array (driver) cannot do this."""


class OutOfSpace(ArrayError):
    """The array has no room left for the snapshot, clone or volume."""


class InvalidName(ArrayError):
    pass


def check_name(kind: str, name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise InvalidName(
            f"{kind} name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def normalise_naa(value: str) -> str:
    """``naa.6001405…`` in lower case; raises InvalidName for anything else."""
    naa = (value or "").strip().lower()
    if not naa.startswith("naa."):
        naa = "naa." + naa
    if not NAA_PATTERN.match(naa):
        raise InvalidName(f"{value!r} is not an NAA id (naa. and 16 or 32 hex digits)")
    return naa


def derived_naa(seed: str) -> str:
    """A stable NAA id in the form a Linux LIO target reports (vendor OUI 00:14:05), for
    volumes an array makes (clones, restores) that need an identity of their own."""
    return "naa.6001405" + hashlib.sha256(seed.encode()).hexdigest()[:25]


def naa_of_lun(device_name: str | None, lun_uuid: str | None) -> str | None:
    """The NAA id of an RDM's LUN, as vCenter reports it: the last part of the device name
    (``/vmfs/devices/disks/naa.…``), else the 32 hex digits ESXi embeds in the LUN's uuid
    after its first five bytes (``02 00 00 00 00`` + NAA + product id)."""
    if device_name:
        tail = device_name.rstrip("/").rsplit("/", 1)[-1].lower()
        if NAA_PATTERN.match(tail):
            return tail
    if lun_uuid and len(lun_uuid) >= 42:
        candidate = "naa." + lun_uuid[10:42].lower()
        if NAA_PATTERN.match(candidate):
            return candidate
    return None


@dataclass(frozen=True)
class Volume:
    naa_id: str
    group: str  # consistency group (for a clone: the clone's name)
    size_bytes: int
    used_bytes: int = 0
    clone_of: str | None = None  # the snapshot a clone was made from
    source_naa_id: str | None = None  # a clone volume: the volume it copies


@dataclass(frozen=True)
class ArraySnapshot:
    id: str  # "<group>@<name>", what the catalog records
    group: str
    name: str
    created_at: datetime
    size_bytes: int  # provisioned size of the volumes it holds
    volumes: tuple[str, ...] = ()  # NAA ids


@dataclass(frozen=True)
class Capabilities:
    driver: str
    consistency_groups: bool
    clone: bool
    revert: bool
    changed_blocks: bool
    read_snapshots: bool
    total_bytes: int
    used_bytes: int
    free_bytes: int
    details: dict[str, Any] = field(default_factory=dict)


Area = tuple[int, int]  # (offset, length) in bytes


class ArrayDriver(ABC):
    """One array. Methods block (arrays are reached from worker threads)."""

    driver_name: str = ""

    @property
    @abstractmethod
    def label(self) -> str:
        """How messages name this array."""

    @abstractmethod
    def check(self) -> str:
        """Reach the array; a one-line description of it, or raise ArrayError."""

    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def list_volumes(self) -> list[Volume]: ...

    def volume(self, naa_id: str) -> Volume:
        naa = normalise_naa(naa_id)
        for v in self.list_volumes():
            if v.naa_id == naa:
                return v
        raise VolumeNotFound(self.label, naa)

    @abstractmethod
    def create_volume(self, group: str, naa_id: str, size_bytes: int) -> Volume: ...

    @abstractmethod
    def delete_volume(self, naa_id: str) -> None:
        """Idempotent."""

    @abstractmethod
    def create_snapshot(self, naa_ids: list[str], name: str) -> ArraySnapshot:
        """Snapshot the consistency group holding these volumes, atomically. All must be in
        one group (that is what makes the snapshot consistent across them)."""

    @abstractmethod
    def delete_snapshot(self, snapshot_id: str) -> None:
        """Idempotent: a snapshot already gone is not an error."""

    @abstractmethod
    def list_snapshots(self, group: str | None = None) -> list[ArraySnapshot]: ...

    def snapshot(self, snapshot_id: str) -> ArraySnapshot:
        group = snapshot_id.partition("@")[0]
        for s in self.list_snapshots(group):
            if s.id == snapshot_id:
                return s
        raise SnapshotNotFound(self.label, snapshot_id)

    @abstractmethod
    def clone_snapshot(self, snapshot_id: str, name: str) -> list[Volume]:
        """New writable volumes (with NAA ids of their own) holding the snapshot's data."""

    @abstractmethod
    def delete_clone(self, name: str) -> None:
        """Idempotent."""

    @abstractmethod
    def revert_to_snapshot(self, snapshot_id: str, naa_ids: list[str] | None = None) -> None:
        """Put the snapshot's data back on the volumes (all of the group when None). The
        hosts must not be using the volumes."""

    @abstractmethod
    def open_snapshot_volume(self, snapshot_id: str, naa_id: str) -> BinaryIO:
        """Read one volume as it was in the snapshot."""

    @abstractmethod
    def open_volume(self, naa_id: str, *, write: bool = False) -> BinaryIO:
        """Read (or, for a restore, write) a volume or clone volume in place."""

    def changed_areas(self, older_id: str, newer_id: str, naa_id: str) -> list[Area]:
        """Areas of one volume that differ between two snapshots of its group."""
        raise NotSupported(f"array {self.label} cannot tell which blocks changed")

    def allocated_areas(self, snapshot_id: str, naa_id: str) -> list[Area] | None:
        """Areas that hold data in a snapshot (the rest reads as zeros); None if unknown."""
        return None
