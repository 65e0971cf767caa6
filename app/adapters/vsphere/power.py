"""Power operations: shut a VM down for a cold snapshot, and power it on again.

A clean shutdown goes through VMware Tools (``ShutdownGuest``): the guest stops its services
(Exchange dismounts its databases) and turns itself off. vCenter answers that call at once,
before the guest is down, so the VM's ``runtime.powerState`` is then watched through a
PropertyCollector until it reads poweredOff. Without running tools only a hard power-off
(``PowerOffVM_Task``) is possible, which is what pulling the plug would do.

Blocking, like the rest of the adapter: asyncio callers run it in a thread.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyVmomi import vim

from ._collector import PC, retrieve_one, translated_faults
from .errors import TaskTimeout, VSphereError
from .tasks import wait_for_task

log = logging.getLogger(__name__)

POWER_TIMEOUT = 600.0
"""Seconds to wait for a VM to power on or off."""

POWERED_ON = "poweredOn"
POWERED_OFF = "poweredOff"
TOOLS_RUNNING = "guestToolsRunning"

# What shut_down did.
ALREADY_OFF = "already_off"
GUEST_SHUTDOWN = "guest_shutdown"
POWER_OFF = "power_off"


class PowerStateTimeout(TaskTimeout):
    """The VM did not reach a power state in time (it may still get there)."""

    def __init__(self, vm: str, state: str, seconds: float, how: str) -> None:
        self.vm = vm
        self.task = f"{how} of {vm}"
        self.description = f"{how} of {vm}"
        self.seconds = seconds
        VSphereError.__init__(
            self, f"{vm} was not {state} within {seconds:g} s after {how}; check it in vCenter"
        )


def _state(client: Any, vm: Any) -> dict[str, Any]:
    with translated_faults(client, f"reading the power state of {vm._moId}"):
        props = retrieve_one(
            client,
            vm,
            vim.VirtualMachine,
            ["name", "runtime.powerState", "guest.toolsRunningStatus"],
        )
    if "runtime.powerState" not in props:  # every VM has one: the read came back empty
        raise VSphereError(
            f"vCenter did not report the power state of {vm._moId}; the session may have ended"
        )
    return props


def power_state(client: Any, vm_moref: Any) -> str:
    """``poweredOn``, ``poweredOff`` or ``suspended``."""
    vm = client.managed_object(vim.VirtualMachine, vm_moref)
    return str(_state(client, vm).get("runtime.powerState"))


def wait_for_power_state(
    client: Any, vm_moref: Any, state: str, timeout: float, *, how: str = "the power operation"
) -> None:
    """Wait until the VM's ``runtime.powerState`` is ``state`` (watched, not polled)."""
    vm = client.managed_object(vim.VirtualMachine, vm_moref)
    deadline = time.monotonic() + timeout
    with translated_faults(client, f"waiting for {vm._moId} to be {state}"):
        collector = client.content.propertyCollector.CreatePropertyCollector()
        try:
            collector.CreateFilter(
                PC.FilterSpec(
                    objectSet=[PC.ObjectSpec(obj=vm, skip=False)],
                    propSet=[
                        PC.PropertySpec(type=vim.VirtualMachine, pathSet=["runtime.powerState"])
                    ],
                ),
                partialUpdates=False,
            )
            version = ""
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PowerStateTimeout(vm._moId, state, timeout, how)
                wait = max(1, min(5, int(remaining) or 1))
                update = collector.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=wait))
                if update is None:
                    continue
                version = update.version
                for filter_update in update.filterSet:
                    for object_update in filter_update.objectSet:
                        for change in object_update.changeSet:
                            if change.name == "runtime.powerState" and str(change.val) == state:
                                return
        finally:
            try:
                collector.Destroy()
            except Exception:  # noqa: BLE001 - the collector ends with the session anyway
                log.debug("could not destroy the power-state collector", exc_info=True)


def shut_down(client: Any, vm_moref: Any, *, timeout: float = POWER_TIMEOUT) -> str:
    """Turn the VM off: a guest shutdown through VMware Tools when they run, else a hard
    power-off. Returns what was done: ``already_off``, ``guest_shutdown`` or ``power_off``.

    Raises :class:`PowerStateTimeout` (a :class:`TaskTimeout`) when the guest has not turned
    itself off within ``timeout`` seconds; the VM is then left as it is.
    """
    vm = client.managed_object(vim.VirtualMachine, vm_moref)
    props = _state(client, vm)
    label = f"{props.get('name') or vm._moId} ({vm._moId})"
    state = str(props.get("runtime.powerState"))
    if state == POWERED_OFF:
        return ALREADY_OFF
    if state == POWERED_ON and props.get("guest.toolsRunningStatus") == TOOLS_RUNNING:
        try:
            with translated_faults(client, f"shutting down the guest of {label}"):
                try:
                    vm.ShutdownGuest()
                except vim.fault.InvalidPowerState:
                    return ALREADY_OFF  # turned off meanwhile
                except vim.fault.ToolsUnavailable:
                    raise _ToolsGone() from None
            wait_for_power_state(
                client, vm, POWERED_OFF, timeout, how="a guest shutdown was requested"
            )
            log.info("guest of %s shut down", label)
            return GUEST_SHUTDOWN
        except _ToolsGone:
            log.info("VMware Tools stopped in %s; powering it off instead", label)
    with translated_faults(client, f"powering off {label}"):
        task = vm.PowerOffVM_Task()
    wait_for_task(client, task, timeout, description=f"powering off {label}")
    return POWER_OFF


class _ToolsGone(Exception):
    pass


def power_on(client: Any, vm_moref: Any, *, timeout: float = POWER_TIMEOUT) -> bool:
    """Power the VM on (resume it if suspended); returns False when it already was on."""
    vm = client.managed_object(vim.VirtualMachine, vm_moref)
    props = _state(client, vm)
    label = f"{props.get('name') or vm._moId} ({vm._moId})"
    if str(props.get("runtime.powerState")) == POWERED_ON:
        return False
    with translated_faults(client, f"powering on {label}"):
        task = vm.PowerOnVM_Task()
    try:
        wait_for_task(client, task, timeout, description=f"powering on {label}")
    except VSphereError:
        if power_state(client, vm) == POWERED_ON:  # powered on by someone else meanwhile
            return False
        raise
    return True
