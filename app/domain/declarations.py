"""What a protection method needs and what it yields.

Each strategy publishes one ``Declaration``; the advisor and the policy checks read only these,
so the whitepaper's rules are written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from app.domain.connections import ConnectionKind
from app.domain.protection import Consistency, DatabaseLayout, ProtectionMethod, RestoreCapability


class Need(StrEnum):
    """Conditions a consistency level depends on, in the operator's words."""

    GUEST_QUIESCE = "VMware Tools quiesces the guest (VSS) during the snapshot"
    IN_GUEST_AGENT = "an Exchange-aware agent runs inside the VM"
    QUIESCE_SCRIPTS = "pre- and post-snapshot scripts quiesce and resume the database"
    DATABASE_DISMOUNTED = "the database is dismounted while the snapshot is taken"
    VM_POWERED_OFF = "the Exchange server is shut down while the snapshot is taken"


class Quiesce(StrEnum):
    """Who brings the database into the state a consistency level needs (the strategies'
    quiescers, app.strategies.quiesce, one per value)."""

    NONE = "none"  # nothing: what is on disk at the snapshot
    TOOLS = "tools"  # VMware Tools drives VSS in the guest during the VMFS snapshot
    SCRIPTS = "scripts"  # the policy's pre- and post-snapshot scripts, run in the guest
    AGENT = "agent"  # an Exchange-aware agent in the guest freezes the database
    POWER_OFF = "power_off"  # the VM is shut down for the snapshot


@dataclass(frozen=True)
class Reach:
    """A consistency level the method reaches on a layout, what that takes, and who
    quiesces for it. A method's reaches are its consistency table: the advisor checks a
    policy against it and the strategy picks its quiescer from it."""

    consistency: Consistency
    needs: frozenset[Need] = frozenset()
    by: Quiesce = Quiesce.NONE


@dataclass(frozen=True)
class Declaration:
    method: ProtectionMethod
    title: str
    summary: str
    # "database": protects one database; "vm": the whole server image (the application).
    scope: str
    reaches: dict[DatabaseLayout, tuple[Reach, ...]]
    # Why the method cannot protect a layout, quoted to the operator.
    ruled_out: dict[DatabaseLayout, str]
    restores: frozenset[RestoreCapability]
    # Extra restores possible only while snapshots are kept on primary storage.
    restores_from_primary: frozenset[RestoreCapability] = frozenset()
    needs_connections: frozenset[ConnectionKind] = frozenset()
    needs_proxy_capability: str | None = None
    notes: tuple[str, ...] = field(default=())
    # True when the method snapshots disks (VMFS, the array): the database's log disk must then
    # be one it can snapshot too, or the restore point holds a database without its logs.
    snapshots_disks: bool = False
    # Why the method cannot keep its snapshots on primary storage (None: it can).
    no_kept_snapshots: str | None = None

    def reach_on(self, layout: DatabaseLayout) -> tuple[Reach, ...]:
        return self.reaches.get(layout, ())

    def reach(self, layout: DatabaseLayout, consistency: Consistency) -> Reach | None:
        """How the method reaches ``consistency`` on ``layout`` (None: it cannot)."""
        return next((r for r in self.reach_on(layout) if r.consistency == consistency), None)
