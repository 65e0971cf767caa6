package main

import (
	"fmt"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Power operations on lab VMs. The simulator's PowerOnVM_Task and PowerOffVM_Task work on a
// labVM (their code is promoted from the embedded VirtualMachine) but leave the guest's VMware
// Tools state as it was, and its ShutdownGuest powers the VM off at once, whether or not tools
// run. A vCenter does neither: tools stop with the guest and start again with it, and
// ShutdownGuest only asks the guest to shut down (ToolsUnavailable without tools), returning
// before the VM is off. The lab does the same, so that clients have to wait for
// runtime.powerState as they must on vCenter.

// guestShutdownDelay is how long a guest takes to shut down after ShutdownGuest
// (--guest-shutdown-seconds).
var guestShutdownDelay = 500 * time.Millisecond

// PowerOnVMTask powers the VM on; VMware Tools (if installed) runs again in the guest.
func (vm *labVM) PowerOnVMTask(ctx *simulator.Context, req *types.PowerOnVM_Task) soap.HasFault {
	res := vm.VirtualMachine.PowerOnVMTask(ctx, req)
	vm.syncTools()
	return res
}

// PowerOffVMTask powers the VM off (a hard power-off); VMware Tools stops with the guest.
func (vm *labVM) PowerOffVMTask(ctx *simulator.Context, req *types.PowerOffVM_Task) soap.HasFault {
	res := vm.VirtualMachine.PowerOffVMTask(ctx, req)
	vm.syncTools()
	return res
}

// ShutdownGuest asks the guest, through VMware Tools, to shut down. The call returns at once;
// the guest powers the VM off guestShutdownDelay later.
func (vm *labVM) ShutdownGuest(ctx *simulator.Context, req *types.ShutdownGuest) soap.HasFault {
	body := &methods.ShutdownGuestBody{}
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		body.Fault_ = simulator.Fault(fmt.Sprintf("%s is %s", vm.Name, vm.Runtime.PowerState), &types.InvalidPowerState{
			RequestedState: types.VirtualMachinePowerStatePoweredOn,
			ExistingState:  vm.Runtime.PowerState,
		})
		return body
	}
	if vm.Guest == nil || vm.Guest.ToolsRunningStatus != string(types.VirtualMachineToolsRunningStatusGuestToolsRunning) {
		body.Fault_ = simulator.Fault(fmt.Sprintf("VMware Tools is not running in %s", vm.Name), &types.ToolsUnavailable{})
		return body
	}
	later := *ctx // the request's context ends with the request; its session and registry stay
	later.Caller = nil
	go func() {
		time.Sleep(guestShutdownDelay)
		simulator.Map.WithLock(vm, func() {
			if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
				return // powered off (or suspended) by someone else meanwhile
			}
			vm.VirtualMachine.ShutdownGuest(&later, req)
			vm.syncTools()
		})
	}()
	body.Res = &types.ShutdownGuestResponse{}
	return body
}

// syncTools makes the guest's VMware Tools state follow the power state: tools stop when the
// VM is not powered on and run again (with the status they had) once it is. The caller holds
// the VM's lock.
func (vm *labVM) syncTools() {
	g := vm.Guest
	if g == nil || g.ToolsStatus == types.VirtualMachineToolsStatusToolsNotInstalled {
		return
	}
	running := string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
	notRunning := string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning)
	on := vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
	switch {
	case !on && g.ToolsRunningStatus == running:
		vm.toolsWhenOn = g.ToolsStatus
		vm.setTools(types.VirtualMachineToolsStatusToolsNotRunning, notRunning, "notRunning")
	case on && g.ToolsRunningStatus != running:
		status := vm.toolsWhenOn
		if status == "" {
			status = types.VirtualMachineToolsStatusToolsOk
		}
		if status == types.VirtualMachineToolsStatusToolsNotRunning {
			return // tools did not run before the power cycle either
		}
		vm.setTools(status, running, "running")
	}
}

func (vm *labVM) setTools(status types.VirtualMachineToolsStatus, runState, guestState string) {
	simulator.Map.Update(vm, []types.PropertyChange{
		{Name: "guest.toolsStatus", Val: status},
		{Name: "guest.toolsRunningStatus", Val: runState},
		{Name: "guest.guestState", Val: guestState},
		{Name: "summary.guest.toolsStatus", Val: status},
		{Name: "summary.guest.toolsRunningStatus", Val: runState},
	})
}
