"""vSphere adapter: sessions, inventory, tasks, snapshots, power and guest operations
through pyVmomi.

Everything here is synchronous, because pyVmomi is. asyncio callers run these functions in a
thread (``await asyncio.to_thread(read_inventory, client)``) and give each thread its own
:class:`VSphereClient`. No framework or database code lives here: callers get plain dataclasses
and :class:`VSphereError` subclasses with operator-readable messages.
"""

from .client import (
    DEFAULT_TIMEOUT,
    VSphereClient,
    connect,
    fetch_thumbprint,
    format_thumbprint,
    normalize_thumbprint,
)
from .cloning import Clone, NameTaken, clone_from_snapshot, clone_made_by, destroy_vm
from .disks import FLAT, OTHER, RDM_PHYSICAL, RDM_VIRTUAL, VirtualDisk
from .errors import (
    AuthenticationFailed,
    CertificateUntrusted,
    ObjectNotFound,
    TaskCancelled,
    TaskFailed,
    TaskTimeout,
    Unreachable,
    VSphereError,
)
from .guest import GuestAuthenticationFailed, GuestCommandTimeout, GuestOperations, GuestResult
from .inventory import (
    Cluster,
    Datacenter,
    Datastore,
    Host,
    Inventory,
    VirtualMachine,
    iter_vms,
    read_inventory,
    read_vms_naive,
)
from .power import (
    PowerStateTimeout,
    power_on,
    power_state,
    shut_down,
    wait_for_power_state,
)
from .snapshot_disks import reset_change_tracking
from .snapshots import Snapshot, create_snapshot, list_snapshots, remove_snapshot, revert_snapshot
from .tasks import wait_for_task

__all__ = [
    "DEFAULT_TIMEOUT",
    "FLAT",
    "OTHER",
    "RDM_PHYSICAL",
    "RDM_VIRTUAL",
    "AuthenticationFailed",
    "CertificateUntrusted",
    "Clone",
    "Cluster",
    "Datacenter",
    "Datastore",
    "GuestAuthenticationFailed",
    "GuestCommandTimeout",
    "GuestOperations",
    "GuestResult",
    "Host",
    "Inventory",
    "NameTaken",
    "ObjectNotFound",
    "PowerStateTimeout",
    "Snapshot",
    "TaskCancelled",
    "TaskFailed",
    "TaskTimeout",
    "Unreachable",
    "VSphereClient",
    "VSphereError",
    "VirtualDisk",
    "VirtualMachine",
    "clone_from_snapshot",
    "clone_made_by",
    "connect",
    "create_snapshot",
    "destroy_vm",
    "fetch_thumbprint",
    "format_thumbprint",
    "iter_vms",
    "list_snapshots",
    "normalize_thumbprint",
    "power_on",
    "power_state",
    "read_inventory",
    "read_vms_naive",
    "remove_snapshot",
    "reset_change_tracking",
    "revert_snapshot",
    "shut_down",
    "wait_for_power_state",
    "wait_for_task",
]
