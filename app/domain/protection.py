"""The whitepaper's vocabulary: database layouts, protection methods, consistency, restores."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class DatabaseLayout(StrEnum):
    """How an Exchange database's storage is presented to its VM."""

    VMDK = "vmdk"  # a virtual disk file on VMFS
    RDM_PHYSICAL = "rdm_physical"  # a LUN mapped in physical compatibility mode
    RDM_VIRTUAL = "rdm_virtual"  # a LUN mapped in virtual compatibility mode


class ProtectionMethod(StrEnum):
    VM_IMAGE = "vm_image"  # snapshot of the whole VM, copied off-host (VCB)
    VMFS_SNAPSHOT = "vmfs_snapshot"  # VMFS snapshot incl. a virtual-mode RDM, with scripts
    ARRAY_SNAPSHOT = "array_snapshot"  # snapshot inside the storage array (physical RDM)
    AGENT_STREAM = "agent_stream"  # in-guest, application-aware stream backup
    MAILBOX = "mailbox"  # mailbox- and message-level backup


class Consistency(StrEnum):
    """What state the database is in on the restore point, best first."""

    HOT_APPLICATION = "hot_application"  # online, quiesced by the application (VSS)
    HOT_CRASH_SCRIPTED = "hot_crash_scripted"  # online, quiesced by pre/post scripts
    CRASH = "crash"  # online, not quiesced: as after a power loss
    WARM = "warm"  # database dismounted, server running
    COLD = "cold"  # server shut down


class RestoreCapability(StrEnum):
    WHOLE_DATABASE = "whole_database"
    MAILBOX = "mailbox"
    MESSAGE = "message"
    INSTANT_RECOVERY = "instant_recovery"
    WHOLE_VM = "whole_vm"


class CopyLocation(StrEnum):
    """Where one copy of a restore point lives."""

    VM_SNAPSHOT = "vm_snapshot"
    ARRAY_SNAPSHOT = "array_snapshot"
    REPOSITORY = "repository"


class RestorePointStatus(StrEnum):
    AVAILABLE = "available"
    EXPIRED = "expired"
    DAMAGED = "damaged"
    # Every copy was found gone outside Bulwark (not expired by it): nothing restores from it.
    UNAVAILABLE = "unavailable"


# Statuses of a restore point with no copy left: counted nowhere as protection.
WITHOUT_COPIES = frozenset({RestorePointStatus.EXPIRED, RestorePointStatus.UNAVAILABLE})


class Verification(StrEnum):
    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    DAMAGED = "damaged"


class RestoreRefused(ValueError):
    """A restore cannot be done as asked; the message says why, for the operator (API: 422).
    ``field`` names the request field at fault."""

    def __init__(self, message: str, *, field: str = "params") -> None:
        super().__init__(message)
        self.field = field

    permanent = True  # a job meeting it fails at once: asking again gets the same answer


BACKING_LAYOUT = {
    "flat": DatabaseLayout.VMDK,
    "rdm-physical": DatabaseLayout.RDM_PHYSICAL,
    "rdm-virtual": DatabaseLayout.RDM_VIRTUAL,
}


def layout_for_backing(backing: str) -> DatabaseLayout | None:
    """The database layout a disk's backing gives; None for backings Bulwark cannot protect."""
    return BACKING_LAYOUT.get(backing)


class LayoutError(ValueError):
    """The disks named for a database do not give a layout; ``field`` says which input."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def layout_from_disks(
    disks: Mapping[int, Any],
    database_disk_key: int | None,
    log_disk_key: int | None,
    stated: DatabaseLayout | None = None,
) -> DatabaseLayout:
    """The layout follows from the database disk's backing; a stated layout must agree.

    ``disks`` maps device keys to objects with ``label`` and ``backing`` (the VM's disks).
    """
    for key, field in ((database_disk_key, "database_disk_key"), (log_disk_key, "log_disk_key")):
        if key is not None and key not in disks:
            raise LayoutError(
                f"the VM has no disk with key {key}; its disks are "
                f"{', '.join(str(k) for k in sorted(disks))}",
                field,
            )
    if database_disk_key is None:
        raise LayoutError("say which disk holds the database", "database_disk_key")
    disk = disks[database_disk_key]
    derived = layout_for_backing(disk.backing)
    if derived is None:
        raise LayoutError(
            f"disk {disk.label} has a '{disk.backing}' backing that Bulwark cannot protect",
            "database_disk_key",
        )
    if stated is not None and stated != derived:
        raise LayoutError(f"disk {disk.label} is {derived.value}, not {stated.value}", "layout")
    return derived
