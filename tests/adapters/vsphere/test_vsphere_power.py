"""Power operations against the lab: guest shutdown for cold snapshots, hard power-off without
tools, power-on, and the guest's VMware Tools state following the power state."""

from __future__ import annotations

import time

import pytest
from pyVmomi import vim

from app.adapters import vsphere
from app.adapters.vsphere import VSphereClient
from app.adapters.vsphere._collector import retrieve_one
from tests.lab_fixture import Lab, running_lab

pytestmark = pytest.mark.lab


def tools(client: VSphereClient, vm: str) -> str:
    obj = client.managed_object(vim.VirtualMachine, vm)
    return retrieve_one(client, obj, vim.VirtualMachine, ["guest.toolsRunningStatus"]).get(
        "guest.toolsRunningStatus", ""
    )


def test_shut_down_through_the_guest_then_power_on(lab: Lab, client: VSphereClient):
    vm = lab.exchange_vm("EXCH-MBX03")["moref"]
    assert vsphere.power_state(client, vm) == "poweredOn"
    assert tools(client, vm) == "guestToolsRunning"

    began = time.monotonic()
    assert vsphere.shut_down(client, vm, timeout=30) == "guest_shutdown"
    # The lab's guest takes half a second to go down after ShutdownGuest returned: it was
    # waited for, not assumed.
    assert time.monotonic() - began >= 0.4
    assert vsphere.power_state(client, vm) == "poweredOff"
    assert tools(client, vm) == "guestToolsNotRunning"
    assert vsphere.shut_down(client, vm, timeout=30) == "already_off"

    assert vsphere.power_on(client, vm) is True
    assert vsphere.power_state(client, vm) == "poweredOn"
    assert tools(client, vm) == "guestToolsRunning"
    assert vsphere.power_on(client, vm) is False


def test_without_tools_the_vm_is_powered_off(lab: Lab, client: VSphereClient):
    no_tools = lab.estate["ordinary_vms"][12]  # every 13th ordinary VM has no VMware Tools
    vm = no_tools["moref"]
    assert vsphere.power_state(client, vm) == "poweredOn"
    assert vsphere.shut_down(client, vm, timeout=30) == "power_off"
    assert vsphere.power_state(client, vm) == "poweredOff"
    assert vsphere.power_on(client, vm) is True
    assert tools(client, vm) == "guestToolsNotRunning"  # still not installed


def test_a_vm_that_was_off_powers_on(lab: Lab, client: VSphereClient):
    off = next(v for v in lab.estate["ordinary_vms"] if v["power_state"] == "poweredOff")
    assert vsphere.shut_down(client, off["moref"], timeout=30) == "already_off"
    assert vsphere.power_on(client, off["moref"]) is True
    assert vsphere.power_state(client, off["moref"]) == "poweredOn"
    assert vsphere.shut_down(client, off["moref"], timeout=30) == "guest_shutdown"


def test_a_snapshot_of_a_shut_down_vm_says_so(lab: Lab, client: VSphereClient):
    vm = lab.exchange_vm("EXCH-MBX01")["moref"]
    vsphere.shut_down(client, vm, timeout=30)
    try:
        moref = vsphere.create_snapshot(client, vm, "cold")
        (snap,) = [s for s in vsphere.list_snapshots(client, vm) if s.moref == moref]
        assert snap.vm_power_state == "poweredOff"
        vsphere.remove_snapshot(client, moref)
    finally:
        vsphere.power_on(client, vm)


def test_a_guest_that_does_not_go_down_in_time():
    with (
        running_lab(extra_args=["--guest-shutdown-seconds", "4"]) as slow,
        vsphere.connect(
            slow.host, slow.port, slow.username, slow.password, trusted_thumbprint=slow.thumbprint
        ) as client,
    ):
        vm = slow.exchange_vm("EXCH-MBX01")["moref"]
        began = time.monotonic()
        with pytest.raises(vsphere.TaskTimeout) as caught:
            vsphere.shut_down(client, vm, timeout=1)
        assert time.monotonic() - began < 3.5
        assert isinstance(caught.value, vsphere.PowerStateTimeout)
        assert "was not poweredOff within 1 s" in str(caught.value)
        # The guest still goes down on its own; waiting for it works.
        vsphere.wait_for_power_state(client, vm, "poweredOff", 10)
        assert vsphere.power_state(client, vm) == "poweredOff"


def test_an_unknown_vm(client: VSphereClient):
    with pytest.raises(vsphere.ObjectNotFound):
        vsphere.power_on(client, "vm-999999")
