"""Words the dashboard shows for the domain's enum values, and badge tones for states."""

from __future__ import annotations

import re

from app.domain.connections import ConnectionKind, ConnectionStatus
from app.domain.jobs import JobKind, JobState
from app.domain.protection import (
    Consistency,
    CopyLocation,
    DatabaseLayout,
    ProtectionMethod,
    RestoreCapability,
    RestorePointStatus,
    Verification,
)

CONNECTION_KINDS = {
    ConnectionKind.VCENTER: "vCenter",
    ConnectionKind.ARRAY: "Storage array",
    ConnectionKind.REPOSITORY: "Repository",
    ConnectionKind.MAIL: "Mail server (IMAP)",
}

METHODS = {
    ProtectionMethod.VM_IMAGE: "VM image",
    ProtectionMethod.VMFS_SNAPSHOT: "VMFS snapshot",
    ProtectionMethod.ARRAY_SNAPSHOT: "Array snapshot",
    ProtectionMethod.AGENT_STREAM: "Agent stream backup",
    ProtectionMethod.MAILBOX: "Mailbox-level backup",
}

CONSISTENCIES = {
    Consistency.HOT_APPLICATION: "Hot, application-consistent",
    Consistency.HOT_CRASH_SCRIPTED: "Hot, quiesced by scripts",
    Consistency.CRASH: "Crash-consistent",
    Consistency.WARM: "Warm (database dismounted)",
    Consistency.COLD: "Cold (server shut down)",
}

LAYOUTS = {
    DatabaseLayout.VMDK: "VMDK on VMFS",
    DatabaseLayout.RDM_PHYSICAL: "Physical-mode RDM",
    DatabaseLayout.RDM_VIRTUAL: "Virtual-mode RDM",
}

JOB_KINDS = {
    JobKind.BACKUP: "Backup",
    JobKind.RESTORE: "Restore",
    JobKind.VERIFY: "Verify",
    JobKind.EXPIRE: "Expire",
    JobKind.COPY: "Copy",
    JobKind.SYNC: "Inventory sync",
}

JOB_STATES = {
    JobState.QUEUED: "Queued",
    JobState.RUNNING: "Running",
    JobState.SUCCEEDED: "Succeeded",
    JobState.FAILED: "Failed",
    JobState.CANCELLED: "Cancelled",
    JobState.PARTIALLY_SUCCEEDED: "Partly succeeded",
}

RESTORES = {
    RestoreCapability.WHOLE_DATABASE: "Whole database",
    RestoreCapability.MAILBOX: "One mailbox",
    RestoreCapability.MESSAGE: "One message",
    RestoreCapability.INSTANT_RECOVERY: "Instant recovery",
    RestoreCapability.WHOLE_VM: "Whole VM",
}

COPY_LOCATIONS = {
    CopyLocation.VM_SNAPSHOT: "VM snapshot (primary storage)",
    CopyLocation.ARRAY_SNAPSHOT: "Array snapshot (primary storage)",
    CopyLocation.REPOSITORY: "Repository (off-host)",
}

# A disk's backing as vSphere reports it, and the short badge the inventory shows.
BACKINGS = {
    "flat": "VMDK",
    "rdm-physical": "Physical RDM",
    "rdm-virtual": "Virtual RDM",
}

POWER_STATES = {
    "poweredOn": "Powered on",
    "poweredOff": "Powered off",
    "suspended": "Suspended",
}

# VMware Tools as vSphere reports it (guest.toolsStatus), in words.
TOOLS_STATES = {
    "toolsOk": "Running",
    "toolsOld": "Running, out of date",
    "toolsNotRunning": "Not running",
    "toolsNotInstalled": "Not installed",
}

HOLD_SCOPES = {
    "server": "Every restore point of a server",
    "restore_point": "One restore point",
    "mailbox": "A mailbox",
    "search": "Messages matching a search",
}

# The recovery point objective, measured: how old the newest restore point is against it.
RPO_STATES = {
    "ok": "Within objective",
    "warning": "Near the objective",
    "breached": "Objective breached",
    "pending": "No restore point yet",
    "unprotected": "Unprotected",
}

VERIFICATIONS = {
    Verification.VERIFIED: "Verified",
    Verification.UNVERIFIED: "Not verified",
    Verification.DAMAGED: "Damaged",
}

# Badge tones: ok (green), bad (red), warn (amber), info (blue), muted (grey).
TONES: dict[str, str] = {
    ConnectionStatus.OK: "ok",
    ConnectionStatus.FAILED: "bad",
    ConnectionStatus.UNTESTED: "muted",
    JobState.QUEUED: "muted",
    JobState.RUNNING: "info",
    JobState.SUCCEEDED: "ok",
    JobState.FAILED: "bad",
    JobState.CANCELLED: "muted",
    JobState.PARTIALLY_SUCCEEDED: "warn",
    Verification.VERIFIED: "ok",
    Verification.UNVERIFIED: "warn",
    Verification.DAMAGED: "bad",
    RestorePointStatus.AVAILABLE: "ok",
    RestorePointStatus.EXPIRED: "muted",
    RestorePointStatus.UNAVAILABLE: "bad",
    "success": "ok",
    "warning": "warn",
    "breached": "bad",
    "pending": "muted",
    "unprotected": "warn",
    "failure": "bad",
    "refused": "warn",
    "throttled": "warn",
}

ALL: dict[str, str] = {
    **CONNECTION_KINDS,
    **METHODS,
    **CONSISTENCIES,
    **LAYOUTS,
    **JOB_KINDS,
    **JOB_STATES,
    **VERIFICATIONS,
    **RESTORES,
    **COPY_LOCATIONS,
    ConnectionStatus.OK: "OK",
    ConnectionStatus.FAILED: "Failed",
    ConnectionStatus.UNTESTED: "Untested",
    RestorePointStatus.AVAILABLE: "Available",
    RestorePointStatus.EXPIRED: "Expired",
    RestorePointStatus.UNAVAILABLE: "Unavailable",
}


def label(value: object) -> str:
    """The operator's word for an enum value; unknown values are shown as they are."""
    if value is None:
        return "—"
    text = str(value)
    return ALL.get(text, text.replace("_", " "))


def tools(value: object) -> str:
    if not value:
        return "—"
    return TOOLS_STATES.get(str(value), str(value))


# "CertificateUntrusted: the certificate …" → "the certificate …": the operator reads the
# reason, not the name of the exception that carried it (the API keeps the full text).
_EXCEPTION_PREFIX = re.compile(
    r"^(?:[A-Za-z_][\w.]*\.)?[A-Z][A-Za-z0-9]*"
    r"(?:Error|Exception|Refused|Untrusted|Failed|Failure|NotFound|Timeout|Lost|Unavailable)"
    r": "
)


def plain_error(value: object) -> str:
    text = "" if value is None else str(value)
    while True:
        stripped = _EXCEPTION_PREFIX.sub("", text, count=1)
        if stripped == text or not stripped:
            return text
        text = stripped


def tone(value: object) -> str:
    return TONES.get(str(value), "muted")


def backing(value: object) -> str:
    text = str(value)
    return BACKINGS.get(text, text)
