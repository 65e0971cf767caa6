"""The whitepaper's vocabulary: database layouts, protection methods, consistency, restores."""

from __future__ import annotations

from enum import StrEnum


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


class Verification(StrEnum):
    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    DAMAGED = "damaged"


BACKING_LAYOUT = {
    "flat": DatabaseLayout.VMDK,
    "rdm-physical": DatabaseLayout.RDM_PHYSICAL,
    "rdm-virtual": DatabaseLayout.RDM_VIRTUAL,
}


def layout_for_backing(backing: str) -> DatabaseLayout | None:
    """The database layout a disk's backing gives; None for backings Bulwark cannot protect."""
    return BACKING_LAYOUT.get(backing)
