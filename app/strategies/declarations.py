"""The protection methods' declarations, after the whitepaper's "Options in data protection"
and "Recovery and Restore". Strategy implementations carry these; the advisor reads them.

Each declaration's ``reaches`` is the method's consistency table: per layout, the levels it
reaches, what each takes, and who quiesces for it (``by``). The advisor refuses a policy the
table cannot honour (a level it does not list, scripts it needs and the policy lacks); the
strategy picks its quiescer from the same row (app.strategies.quiesce)."""

from __future__ import annotations

from app.domain.connections import ConnectionKind
from app.domain.declarations import Declaration, Need, Quiesce, Reach
from app.domain.protection import Consistency as C
from app.domain.protection import DatabaseLayout as L
from app.domain.protection import ProtectionMethod as M
from app.domain.protection import RestoreCapability as R

PHYSICAL_RDM_NO_VMFS = (
    "a physical-mode RDM bypasses VMFS entirely: VMFS cannot snapshot it, so all snapshot "
    "and cloning activity must happen inside the storage array"
)
# Warm: the pre-snapshot script dismounts the database, the post-snapshot script mounts it.
COLD_WARM = (
    Reach(C.WARM, frozenset({Need.DATABASE_DISMOUNTED, Need.QUIESCE_SCRIPTS}), Quiesce.SCRIPTS),
    Reach(C.COLD, frozenset({Need.VM_POWERED_OFF}), Quiesce.POWER_OFF),
)
TOOLS = Reach(C.HOT_APPLICATION, frozenset({Need.GUEST_QUIESCE}), Quiesce.TOOLS)
SCRIPTED = Reach(C.HOT_CRASH_SCRIPTED, frozenset({Need.QUIESCE_SCRIPTS}), Quiesce.SCRIPTS)

VM_IMAGE = Declaration(
    method=M.VM_IMAGE,
    title="VM image backup",
    summary="Snapshot of the whole VM copied off the host to the repository (VCB): protects "
    "the Exchange application and system disk; take a new full image after patches or changes",
    scope="vm",
    reaches={
        L.VMDK: (
            TOOLS,
            Reach(C.CRASH),
            *COLD_WARM,
        ),
    },
    ruled_out={},
    # From the repository: every disk back over the original (the whole VM's disks), one disk
    # as a new VMDK, or a download.
    restores=frozenset({R.WHOLE_VM}),
    no_kept_snapshots="an image is copied from the snapshot's whole base disks, and a "
    "snapshot kept on primary storage would make the next backup's disks deltas of it",
    needs_connections=frozenset({ConnectionKind.VCENTER, ConnectionKind.REPOSITORY}),
    needs_proxy_capability="vcenter",
    notes=(
        "Disks in physical-mode RDMs are not in a VM snapshot; protect them on the array.",
        "Each disk of the image can be restored on its own; a database disk on a VMDK or a "
        "virtual-mode RDM restores the whole database (the VM powered off).",
        "Without changed block tracking every backup reads the whole disks; only new blocks "
        "are stored.",
    ),
)

VMFS_SNAPSHOT = Declaration(
    method=M.VMFS_SNAPSHOT,
    title="VMFS snapshot",
    summary="VMFS snapshot of the VM including the database disk, optionally copied off-host "
    "through a proxy; restores the complete database",
    scope="database",
    reaches={
        # On a VMDK, VMware Tools drives VSS in a Windows guest: hot and application-consistent.
        L.VMDK: (
            TOOLS,
            SCRIPTED,
            *COLD_WARM,
        ),
        # VCB cannot quiesce Exchange on a virtual-mode RDM: scripts, or cold/warm only.
        L.RDM_VIRTUAL: (
            SCRIPTED,
            *COLD_WARM,
        ),
    },
    ruled_out={L.RDM_PHYSICAL: PHYSICAL_RDM_NO_VMFS},
    restores=frozenset({R.WHOLE_DATABASE}),
    restores_from_primary=frozenset({R.INSTANT_RECOVERY}),
    needs_connections=frozenset({ConnectionKind.VCENTER}),
    needs_proxy_capability="vcenter",
    snapshots_disks=True,
    notes=(
        "Hot application-consistent backup of a virtual-mode RDM is not possible with VMFS "
        "snapshots: only in-guest agents (VMDK) or array snapshots (physical RDM) give that.",
    ),
)

ARRAY_SNAPSHOT = Declaration(
    method=M.ARRAY_SNAPSHOT,
    title="Array snapshot",
    summary="Snapshot of the database and log LUNs inside the storage array, quiesced by the "
    "in-guest agent (VSS); copied off-host from the array; recent snapshots kept on the array "
    "for instant recovery",
    scope="database",
    reaches={
        L.RDM_PHYSICAL: (
            # The agent's VSS-aware freeze; until the in-guest agent drives it, its freeze and
            # thaw commands are the policy's scripts, and without them the point is crash-
            # consistent (and says so).
            Reach(C.HOT_APPLICATION, frozenset({Need.IN_GUEST_AGENT}), Quiesce.AGENT),
            SCRIPTED,
            Reach(C.CRASH),
            *COLD_WARM,
        ),
    },
    ruled_out={
        L.VMDK: "the database is a file on VMFS, not a LUN of its own: the array cannot "
        "snapshot it apart from every other VM on the datastore",
        L.RDM_VIRTUAL: "a virtual-mode RDM is protected with VMFS snapshots (VCB); array "
        "snapshots are the method for physical-mode RDMs",
    },
    restores=frozenset({R.WHOLE_DATABASE}),
    restores_from_primary=frozenset({R.INSTANT_RECOVERY}),
    needs_connections=frozenset({ConnectionKind.VCENTER, ConnectionKind.ARRAY}),
    needs_proxy_capability="array",
    snapshots_disks=True,
)

AGENT_STREAM = Declaration(
    method=M.AGENT_STREAM,
    title="In-guest agent stream backup",
    summary="Application-aware agent inside the VM streams the database, incrementally, as on "
    "a physical server",
    scope="database",
    reaches={L.VMDK: (Reach(C.HOT_APPLICATION, frozenset({Need.IN_GUEST_AGENT}), Quiesce.AGENT),)},
    ruled_out={
        L.RDM_PHYSICAL: "a database on a physical-mode RDM is protected by array snapshots "
        "quiesced by the agent, not by streaming it",
        L.RDM_VIRTUAL: "a database on a virtual-mode RDM is protected by VMFS snapshots "
        "(VCB) with quiesce scripts",
    },
    restores=frozenset({R.WHOLE_DATABASE}),
    needs_connections=frozenset({ConnectionKind.REPOSITORY}),
    needs_proxy_capability="agent",
)

MAILBOX = Declaration(
    method=M.MAILBOX,
    title="Mailbox-level backup",
    summary="Backs up each mailbox and message so one mailbox or one deleted message can be "
    "restored, and keeps a searchable archive for records requests",
    scope="database",
    # Messages are read from the running server, one consistent message at a time.
    reaches={L.VMDK: (Reach(C.HOT_APPLICATION),)},
    ruled_out={
        L.RDM_PHYSICAL: "mailbox-level protection is the in-guest option for a database on "
        "a VMDK; a physical-mode RDM is protected at database level on the array",
        L.RDM_VIRTUAL: "mailbox-level protection is the in-guest option for a database on a "
        "VMDK; a virtual-mode RDM is protected at database level with VMFS snapshots",
    },
    restores=frozenset({R.WHOLE_DATABASE, R.MAILBOX, R.MESSAGE}),
    needs_connections=frozenset({ConnectionKind.MAIL, ConnectionKind.REPOSITORY}),
    needs_proxy_capability="mail",
)

DECLARATIONS: dict[M, Declaration] = {
    d.method: d for d in (VM_IMAGE, VMFS_SNAPSHOT, ARRAY_SNAPSHOT, AGENT_STREAM, MAILBOX)
}
