package main

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// labVM stands in the simulator's registry for every VM the lab lays out.
//
// The simulator dispatches SOAP methods by reflection on the object it finds in its registry, so
// an object of this type receives the calls: the methods defined here replace broken ones of the
// simulator, and all others are the simulator's own (promoted from the embedded VirtualMachine).
// What is replaced, and why:
//
//   - Raw device mappings. The simulator's disk-layout code (updateDiskLayouts, reached from
//     ReconfigVM_Task, RefreshStorageInfo, snapshot removal and Destroy_Task) type-asserts that
//     every disk is a flat VMDK and panics on an RDM. Those methods run the simulator's code with
//     the RDM disks set aside, and handle RDM device changes themselves.
//
//   - Snapshots. Removing the current snapshot when it is a root with children panics the
//     simulator (it assigns a typed nil parent), and its snapshot code looks VMs up as
//     *simulator.VirtualMachine, which a labVM is not. So CreateSnapshot_Task makes labSnapshot
//     objects, which implement RemoveSnapshot_Task and RevertToSnapshot_Task, and
//     RemoveAllSnapshots_Task is the lab's too.
//
//   - CloneVM_Task of a VM with RDMs is refused (the simulator's clone assumes flat VMDKs).
//
//   - Power operations keep the guest's VMware Tools state in step, and ShutdownGuest returns
//     before the VM is off, as on vCenter (power.go).
//
// Guest operations on lab VMs are answered by the stand-in guest (guest.go). Simulator code
// that type-asserts *simulator.VirtualMachine (performance counters, PowerOnMultiVM, vApps)
// does not work on lab VMs. VMs that clients create at run time stay the simulator's own objects.
//
// The embedded VirtualMachine must stay the first field: the simulator's PropertyCollector finds
// the vim25 managed object by walking first fields.
type labVM struct {
	simulator.VirtualMachine

	snapshotSeq int32
	toolsWhenOn types.VirtualMachineToolsStatus // tools status before the last power-off (power.go)
}

// labSnapshot is a snapshot of a labVM (see labVM for why it exists).
type labSnapshot struct {
	simulator.VirtualMachineSnapshot

	dataFile string // datastore path of the .vmsn file, removed with the snapshot
}

// adoptVM puts a labVM in the registry in place of the simulator's object for ref.
func adoptVM(ref types.ManagedObjectReference) (*labVM, error) {
	switch obj := simulator.Map.Get(ref).(type) {
	case *labVM:
		return obj, nil
	case *simulator.VirtualMachine:
		// The copy takes over the VM's state; the old object is no longer reachable by the
		// simulator, which always looks objects up by reference.
		vm := &labVM{VirtualMachine: *obj}
		simulator.Map.Put(vm)
		return vm, nil
	default:
		return nil, fmt.Errorf("%v is not a VM", ref)
	}
}

func isRDM(device types.BaseVirtualDevice) bool {
	disk, ok := device.(*types.VirtualDisk)
	if !ok {
		return false
	}
	_, ok = disk.Backing.(*types.VirtualDiskRawDiskMappingVer1BackingInfo)
	return ok
}

func (vm *labVM) rdmDisks() []*types.VirtualDisk {
	var disks []*types.VirtualDisk
	for _, d := range vm.Config.Hardware.Device {
		if isRDM(d) {
			disks = append(disks, d.(*types.VirtualDisk))
		}
	}
	return disks
}

// withRDMsSetAside runs f, a call into the simulator's own code, while the VM's device list
// holds no RDM disk, then puts the RDM disks back. The caller holds the VM's lock (the
// simulator takes it around every SOAP call on the VM), so property reads never see the short
// list; WaitForUpdates listeners get the full list again in the final update.
func (vm *labVM) withRDMsSetAside(f func()) {
	var kept []types.BaseVirtualDevice
	var rdms []types.BaseVirtualDevice
	for _, d := range vm.Config.Hardware.Device {
		if isRDM(d) {
			rdms = append(rdms, d)
		} else {
			kept = append(kept, d)
		}
	}
	vm.Config.Hardware.Device = kept
	defer func() {
		if vm.Config == nil { // destroyed
			return
		}
		vm.Config.Hardware.Device = orderedDevices(append(vm.Config.Hardware.Device, rdms...))
	}()
	f()
}

// orderedDevices sorts controllers and disks the way vCenter lists them: by device key.
func orderedDevices(devices []types.BaseVirtualDevice) []types.BaseVirtualDevice {
	sort.SliceStable(devices, func(i, j int) bool {
		return devices[i].GetVirtualDevice().Key < devices[j].GetVirtualDevice().Key
	})
	return devices
}

func (vm *labVM) publishDevices() {
	disks := 0
	for _, d := range vm.Config.Hardware.Device {
		if _, ok := d.(*types.VirtualDisk); ok {
			disks++
		}
	}
	simulator.Map.Update(vm, []types.PropertyChange{
		{Name: "config.hardware.device", Val: vm.Config.Hardware.Device},
		{Name: "summary.config.numVirtualDisks", Val: int32(disks)},
	})
}

// ReconfigVMTask applies device changes that concern RDM disks itself and hands everything
// else to the simulator with the RDM disks set aside.
func (vm *labVM) ReconfigVMTask(ctx *simulator.Context, req *types.ReconfigVM_Task) soap.HasFault {
	task := simulator.CreateTask(vm, "reconfigVm", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, vm.reconfigure(ctx, req)
	})
	return &methods.ReconfigVM_TaskBody{Res: &types.ReconfigVM_TaskResponse{Returnval: task.Run()}}
}

func (vm *labVM) reconfigure(ctx *simulator.Context, req *types.ReconfigVM_Task) types.BaseMethodFault {
	spec := req.Spec
	all := object.VirtualDeviceList(vm.Config.Hardware.Device)

	var rdmChanges, others []types.BaseVirtualDeviceConfigSpec
	renamed := map[int32]int32{}
	used := map[int32]bool{}
	for _, d := range all {
		used[d.GetVirtualDevice().Key] = true
	}
	for _, change := range spec.DeviceChange {
		dspec := change.GetVirtualDeviceConfigSpec()
		device := dspec.Device.GetVirtualDevice()
		if dspec.Operation == types.VirtualDeviceConfigSpecOperationAdd && device.Key <= 0 {
			// Choose keys here, knowing the RDM disks the simulator will not see; it would
			// otherwise hand out a key an RDM disk already has.
			key := int32(2000)
			if _, isDisk := dspec.Device.(*types.VirtualDisk); !isDisk {
				key = 20000
			}
			for used[key] {
				key++
			}
			used[key] = true
			renamed[device.Key] = key
			device.Key = key
		}
		existing := all.FindByKey(device.Key)
		if isRDM(dspec.Device) || (existing != nil && isRDM(existing)) {
			rdmChanges = append(rdmChanges, change)
		} else {
			others = append(others, change)
		}
	}
	for _, change := range spec.DeviceChange {
		d := change.GetVirtualDeviceConfigSpec().Device.GetVirtualDevice()
		if key, ok := renamed[d.ControllerKey]; ok {
			d.ControllerKey = key
		}
	}
	if fault := vm.checkUnitsFree(others); fault != nil {
		return fault
	}

	spec.DeviceChange = others
	var fault types.BaseMethodFault
	vm.withRDMsSetAside(func() {
		body := vm.VirtualMachine.ReconfigVMTask(ctx, &types.ReconfigVM_Task{This: req.This, Spec: spec})
		inner := body.(*methods.ReconfigVM_TaskBody).Res.Returnval
		if task, ok := simulator.Map.Get(inner).(*simulator.Task); ok {
			if task.Info.Error != nil {
				fault = task.Info.Error.Fault
			}
		}
		// The inner task is an implementation detail of this one.
		simulator.Map.Remove(inner)
	})
	if fault != nil {
		return fault
	}
	if spec.ChangeTrackingEnabled != nil && !*spec.ChangeTrackingEnabled {
		forgetChangeIDs(vm.Self.Value)
	}

	for i, change := range rdmChanges {
		if fault := vm.applyRDMChange(change.GetVirtualDeviceConfigSpec(), int32(i)); fault != nil {
			vm.publishDevices()
			return fault
		}
	}
	vm.Config.Hardware.Device = orderedDevices(vm.Config.Hardware.Device)
	vm.refreshRDMLayout()
	vm.publishDevices()
	return nil
}

// checkUnitsFree refuses added devices that would sit on a unit an RDM disk holds: the
// simulator checks unit numbers only against the devices it sees.
func (vm *labVM) checkUnitsFree(changes []types.BaseVirtualDeviceConfigSpec) types.BaseMethodFault {
	for i, change := range changes {
		dspec := change.GetVirtualDeviceConfigSpec()
		d := dspec.Device.GetVirtualDevice()
		if dspec.Operation != types.VirtualDeviceConfigSpecOperationAdd || d.UnitNumber == nil {
			continue
		}
		for _, rdm := range vm.rdmDisks() {
			if rdm.ControllerKey == d.ControllerKey && rdm.UnitNumber != nil && *rdm.UnitNumber == *d.UnitNumber {
				return &types.InvalidDeviceSpec{InvalidVmConfig: types.InvalidVmConfig{Property: "unitNumber"}, DeviceIndex: int32(i)}
			}
		}
	}
	return nil
}

func (vm *labVM) applyRDMChange(dspec *types.VirtualDeviceConfigSpec, index int32) types.BaseMethodFault {
	devices := object.VirtualDeviceList(vm.Config.Hardware.Device)
	invalid := &types.InvalidDeviceSpec{DeviceIndex: index}
	key := dspec.Device.GetVirtualDevice().Key

	switch dspec.Operation {
	case types.VirtualDeviceConfigSpecOperationAdd:
		disk, ok := dspec.Device.(*types.VirtualDisk)
		if !ok {
			return invalid
		}
		if fault := vm.prepareRDMDisk(disk, devices, dspec.FileOperation); fault != nil {
			return fault
		}
		vm.Config.Hardware.Device = append(vm.Config.Hardware.Device, disk)
	case types.VirtualDeviceConfigSpecOperationRemove:
		existing := devices.FindByKey(key)
		if existing == nil {
			return invalid
		}
		if dspec.FileOperation == types.VirtualDeviceConfigSpecFileOperationDestroy && isRDM(existing) {
			vm.deleteMappingFiles(existing.(*types.VirtualDisk))
		}
		vm.Config.Hardware.Device = removeDevice(vm.Config.Hardware.Device, key)
	case types.VirtualDeviceConfigSpecOperationEdit:
		existing := devices.FindByKey(key)
		disk, ok := dspec.Device.(*types.VirtualDisk)
		if existing == nil || !ok || !isRDM(disk) {
			// Turning an RDM into a VMDK (or back) needs a disk migration, not a reconfigure.
			return &types.NotSupported{}
		}
		rest := object.VirtualDeviceList(removeDevice(vm.Config.Hardware.Device, key))
		if fault := vm.prepareRDMDisk(disk, rest, ""); fault != nil {
			return fault
		}
		vm.Config.Hardware.Device = append([]types.BaseVirtualDevice(rest), disk)
	}
	return nil
}

func removeDevice(devices []types.BaseVirtualDevice, key int32) []types.BaseVirtualDevice {
	out := make([]types.BaseVirtualDevice, 0, len(devices))
	for _, d := range devices {
		if d.GetVirtualDevice().Key != key {
			out = append(out, d)
		}
	}
	return out
}

// prepareRDMDisk checks an RDM disk spec and fills in what ESXi would: mapping file, datastore,
// disk mode, labels. others are the VM's devices without this disk.
func (vm *labVM) prepareRDMDisk(disk *types.VirtualDisk, others object.VirtualDeviceList, fileOp types.VirtualDeviceConfigSpecFileOperation) types.BaseMethodFault {
	backing := disk.Backing.(*types.VirtualDiskRawDiskMappingVer1BackingInfo)
	switch backing.CompatibilityMode {
	case string(types.VirtualDiskCompatibilityModePhysicalMode):
		// Physical mode passes SCSI commands to the LUN: no disk modes, no VMFS snapshots.
		backing.DiskMode = string(types.VirtualDiskModeIndependent_persistent)
	case string(types.VirtualDiskCompatibilityModeVirtualMode):
		if backing.DiskMode == "" {
			backing.DiskMode = string(types.VirtualDiskModePersistent)
		}
	default:
		return &types.InvalidDeviceBacking{}
	}
	if backing.DeviceName == "" && backing.LunUuid == "" {
		return &types.InvalidDeviceBacking{}
	}
	controller, ok := others.FindByKey(disk.ControllerKey).(types.BaseVirtualSCSIController)
	if !ok {
		return &types.InvalidController{ControllerKey: disk.ControllerKey}
	}
	if disk.UnitNumber == nil {
		others.AssignController(disk, controller.(types.BaseVirtualController))
	}
	for _, d := range others {
		o := d.GetVirtualDevice()
		if o.ControllerKey == disk.ControllerKey && o.UnitNumber != nil && *o.UnitNumber == *disk.UnitNumber {
			return &types.InvalidDeviceSpec{InvalidVmConfig: types.InvalidVmConfig{Property: "unitNumber"}}
		}
	}

	var p object.DatastorePath
	if !p.FromString(backing.FileName) || p.Path == "" {
		// ESXi keeps the mapping file with the VM unless told otherwise.
		home, _ := parseDatastorePath(vm.Config.Files.VmPathName)
		if p.Datastore == "" {
			p.Datastore = home.Datastore
		}
		p.Path = path.Join(path.Dir(home.Path), vm.freeDiskFileName(p.Datastore))
		backing.FileName = p.String()
	}
	ds := findDatastoreByName(p.Datastore)
	if ds == nil {
		return &types.InvalidDatastorePath{DatastorePath: backing.FileName}
	}
	backing.Datastore = &ds.Self
	if fileOp == types.VirtualDeviceConfigSpecFileOperationCreate || !fileExists(localPath(ds, p.Path)) {
		if err := writeMappingFiles(ds, p.Path, disk, backing); err != nil {
			return &types.CannotCreateFile{FileFault: types.FileFault{File: backing.FileName}}
		}
	}
	if disk.CapacityInBytes == 0 {
		disk.CapacityInBytes = disk.CapacityInKB * 1024
	}
	if disk.CapacityInKB == 0 {
		disk.CapacityInKB = disk.CapacityInBytes / 1024
	}
	if disk.DeviceInfo == nil || disk.DeviceInfo.GetDescription().Label == "" {
		disks := len(others.SelectByType((*types.VirtualDisk)(nil)))
		disk.DeviceInfo = &types.Description{
			Label:   fmt.Sprintf("Hard disk %d", disks+1),
			Summary: fmt.Sprintf("%d KB", disk.CapacityInKB),
		}
	}
	if simulator.FindReference(vm.Datastore, ds.Self) == nil {
		vm.Datastore = append(vm.Datastore, ds.Self)
		simulator.Map.AppendReference(ds, &ds.Vm, vm.Self)
	}
	return nil
}

// freeDiskFileName picks NAME_N.vmdk not yet used by any disk of the VM.
func (vm *labVM) freeDiskFileName(datastore string) string {
	taken := map[string]bool{}
	for _, d := range vm.Config.Hardware.Device {
		if disk, ok := d.(*types.VirtualDisk); ok {
			if b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
				taken[path.Base(b.GetVirtualDeviceFileBackingInfo().FileName)] = true
			}
		}
	}
	for i := 1; ; i++ {
		name := fmt.Sprintf("%s_%d.vmdk", vm.Name, i)
		if !taken[name] {
			return name
		}
	}
}

func (vm *labVM) deleteMappingFiles(disk *types.VirtualDisk) {
	backing := disk.Backing.(*types.VirtualDiskRawDiskMappingVer1BackingInfo)
	p, err := parseDatastorePath(backing.FileName)
	if err != nil {
		return
	}
	if ds := findDatastoreByName(p.Datastore); ds != nil {
		_ = os.Remove(localPath(ds, p.Path))
		_ = os.Remove(localPath(ds, mappingExtent(p.Path, backing.CompatibilityMode)))
	}
}

// refreshRDMLayout records the RDM mapping files in the VM's file layout, which the
// simulator's layout code (run with RDMs set aside) leaves out.
func (vm *labVM) refreshRDMLayout() {
	if vm.Layout == nil || vm.LayoutEx == nil {
		return
	}
	rdmKeys := map[int32]bool{}
	for _, disk := range vm.rdmDisks() {
		rdmKeys[disk.Key] = true
	}
	var layout []types.VirtualMachineFileLayoutDiskLayout
	for _, l := range vm.Layout.Disk {
		if !rdmKeys[l.Key] {
			layout = append(layout, l)
		}
	}
	var layoutEx []types.VirtualMachineFileLayoutExDiskLayout
	for _, l := range vm.LayoutEx.Disk {
		if !rdmKeys[l.Key] {
			layoutEx = append(layoutEx, l)
		}
	}
	for _, disk := range vm.rdmDisks() {
		backing := disk.Backing.(*types.VirtualDiskRawDiskMappingVer1BackingInfo)
		p, err := parseDatastorePath(backing.FileName)
		if err != nil {
			continue
		}
		extent := object.DatastorePath{Datastore: p.Datastore, Path: mappingExtent(p.Path, backing.CompatibilityMode)}
		keys := []int32{
			vm.layoutFile(backing.FileName, string(types.VirtualMachineFileLayoutExFileTypeDiskDescriptor)),
			vm.layoutFile(extent.String(), string(types.VirtualMachineFileLayoutExFileTypeDiskExtent)),
		}
		layout = append(layout, types.VirtualMachineFileLayoutDiskLayout{Key: disk.Key, DiskFile: []string{backing.FileName}})
		layoutEx = append(layoutEx, types.VirtualMachineFileLayoutExDiskLayout{
			Key:   disk.Key,
			Chain: []types.VirtualMachineFileLayoutExDiskUnit{{FileKey: keys}},
		})
	}
	vm.Layout.Disk = layout
	vm.LayoutEx.Disk = layoutEx
	vm.LayoutEx.Timestamp = time.Now()
}

// layoutFile returns the LayoutEx file key of a datastore path, adding the file if missing.
func (vm *labVM) layoutFile(name, kind string) int32 {
	var next int32
	for _, f := range vm.LayoutEx.File {
		if f.Name == name {
			return f.Key
		}
		if f.Key >= next {
			next = f.Key + 1
		}
	}
	var size int64
	if p, err := parseDatastorePath(name); err == nil {
		if ds := findDatastoreByName(p.Datastore); ds != nil {
			if info, err := os.Stat(localPath(ds, p.Path)); err == nil {
				size = info.Size()
			}
		}
	}
	vm.LayoutEx.File = append(vm.LayoutEx.File, types.VirtualMachineFileLayoutExFileInfo{
		Key: next, Name: name, Type: kind, Size: size, UniqueSize: size, Accessible: types.NewBool(true),
	})
	return next
}

func (vm *labVM) dropLayoutFile(name string) {
	files := vm.LayoutEx.File[:0]
	for _, f := range vm.LayoutEx.File {
		if f.Name != name {
			files = append(files, f)
		}
	}
	vm.LayoutEx.File = files
}

// RefreshStorageInfo runs the simulator's refresh with the RDM disks set aside, then adds
// their mapping files.
func (vm *labVM) RefreshStorageInfo(ctx *simulator.Context, req *types.RefreshStorageInfo) soap.HasFault {
	var res soap.HasFault
	vm.withRDMsSetAside(func() { res = vm.VirtualMachine.RefreshStorageInfo(ctx, req) })
	vm.refreshRDMLayout()
	return res
}

// DestroyTask removes the VM with the RDM disks set aside (the LUNs themselves are untouched,
// as on ESXi; the mapping files go with the VM's folder).
func (vm *labVM) DestroyTask(ctx *simulator.Context, req *types.Destroy_Task) soap.HasFault {
	for _, disk := range vm.rdmDisks() {
		vm.deleteMappingFiles(disk)
	}
	var res soap.HasFault
	vm.withRDMsSetAside(func() { res = vm.VirtualMachine.DestroyTask(ctx, req) })
	return res
}

// CloneVMTask refuses VMs with RDMs: the simulator's clone code assumes flat VMDKs, and cloning
// an RDM VM (which converts or re-maps LUNs) is nothing Bulwark does. Others clone as usual,
// with two fixes:
//   - spec.snapshot ("clone from a snapshot", how a restore point becomes a new VM): vCenter
//     builds the clone from the VM as it was in that snapshot; the simulator ignores the field
//     and clones the current state. Here the clone gets the devices the VM had when the
//     snapshot was taken, and a snapshot of another VM is refused (InvalidArgument), as
//     vCenter does.
//   - the simulator's clone code blanks the file name of every disk it is handed, which are
//     the source VM's own disk objects; it is handed copies instead.
//
// Disk contents are not copied (the simulator creates empty disks for the clone).
func (vm *labVM) CloneVMTask(ctx *simulator.Context, req *types.CloneVM_Task) soap.HasFault {
	if len(vm.rdmDisks()) > 0 {
		return &methods.CloneVM_TaskBody{
			Fault_: simulator.Fault("bulwark-lab does not clone VMs with raw device mappings", &types.NotSupported{}),
		}
	}
	devices := vm.Config.Hardware.Device
	if ref := req.Spec.Snapshot; ref != nil {
		snap, ok := simulator.Map.Get(*ref).(*labSnapshot)
		if !ok || snap.Vm != vm.Self {
			return &methods.CloneVM_TaskBody{
				Fault_: simulator.Fault("the snapshot is not one of this VM's", &types.InvalidArgument{InvalidProperty: "spec.snapshot"}),
			}
		}
		devices = snap.Config.Hardware.Device
	}
	saved := vm.Config.Hardware.Device
	vm.Config.Hardware.Device = copyDisks(devices)
	defer func() { vm.Config.Hardware.Device = saved }()
	return vm.VirtualMachine.CloneVMTask(ctx, req)
}

// copyDisks returns the device list with every flat disk (and its backing) copied, so that
// code that edits them does not edit the originals.
func copyDisks(devices []types.BaseVirtualDevice) []types.BaseVirtualDevice {
	out := make([]types.BaseVirtualDevice, len(devices))
	for i, device := range devices {
		out[i] = device
		disk, ok := device.(*types.VirtualDisk)
		if !ok {
			continue
		}
		if backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
			d := *disk
			b := *backing
			d.Backing = &b
			out[i] = &d
		}
	}
	return out
}

// CreateSnapshotTask takes a VMFS snapshot of the VM: metadata only, like the simulator (no
// delta disks, so the base disks stay readable over /folder). Physical-mode RDM disks are left
// out of the snapshot's disk list, as ESXi leaves them out: only the array can snapshot them.
func (vm *labVM) CreateSnapshotTask(req *types.CreateSnapshot_Task) soap.HasFault {
	task := simulator.CreateTask(vm, "createSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return vm.createSnapshot(req)
	})
	return &methods.CreateSnapshot_TaskBody{Res: &types.CreateSnapshot_TaskResponse{Returnval: task.Run()}}
}

func (vm *labVM) createSnapshot(req *types.CreateSnapshot_Task) (types.AnyType, types.BaseMethodFault) {
	if vm.Snapshot == nil {
		vm.Snapshot = &types.VirtualMachineSnapshotInfo{}
	}
	snap := &labSnapshot{}
	snap.Self.Type = "VirtualMachineSnapshot" // else the registry would name it after this Go type
	snap.Vm = vm.Self
	snap.Config = *vm.Config
	// Its own copy of the devices, carrying the change ids of changed block tracking.
	snap.Config.Hardware.Device = vm.snapshotDevices()
	simulator.Map.Put(snap)

	vm.snapshotSeq++
	node := types.VirtualMachineSnapshotTree{
		Snapshot:        snap.Self,
		Vm:              vm.Self,
		Name:            req.Name,
		Description:     req.Description,
		Id:              vm.snapshotSeq,
		CreateTime:      time.Now(),
		State:           vm.Runtime.PowerState,
		Quiesced:        req.Quiesce,
		ReplaySupported: types.NewBool(false),
	}
	if cur := vm.Snapshot.CurrentSnapshot; cur != nil {
		if parent, ok := simulator.Map.Get(*cur).(*labSnapshot); ok {
			parent.ChildSnapshot = append(parent.ChildSnapshot, snap.Self)
		}
		tree := cloneTree(vm.Snapshot.RootSnapshotList)
		if at := findSnapshot(tree, *cur); at != nil {
			at.ChildSnapshotList = append(at.ChildSnapshotList, node)
		}
		vm.Snapshot.RootSnapshotList = tree
	} else {
		vm.Snapshot.RootSnapshotList = append(cloneTree(vm.Snapshot.RootSnapshotList), node)
	}

	snap.dataFile = vm.writeSnapshotFile(node)
	if snap.dataFile != "" {
		dataKey := vm.layoutFile(snap.dataFile, string(types.VirtualMachineFileLayoutExFileTypeSnapshotData))
		var files []string
		files = append(files, snap.dataFile)
		var disks []types.VirtualMachineFileLayoutExDiskLayout
		for _, l := range vm.LayoutEx.Disk {
			if vm.inSnapshots(l.Key) {
				disks = append(disks, l)
			}
		}
		for _, l := range vm.Layout.Disk {
			if vm.inSnapshots(l.Key) {
				files = append(files, l.DiskFile...)
			}
		}
		vm.Layout.Snapshot = append(vm.Layout.Snapshot, types.VirtualMachineFileLayoutSnapshotLayout{Key: snap.Self, SnapshotFile: files})
		vm.LayoutEx.Snapshot = append(vm.LayoutEx.Snapshot, types.VirtualMachineFileLayoutExSnapshotLayout{
			Key: snap.Self, DataKey: dataKey, MemoryKey: -1, Disk: disks,
		})
	}

	simulator.Map.Update(vm, []types.PropertyChange{
		{Name: "snapshot.rootSnapshotList", Val: vm.Snapshot.RootSnapshotList},
		{Name: "snapshot.currentSnapshot", Val: snap.Self},
	})
	return snap.Self, nil
}

// inSnapshots tells whether a disk is captured by VMFS snapshots: independent disks (which
// include physical-mode RDMs) are not.
func (vm *labVM) inSnapshots(key int32) bool {
	d := object.VirtualDeviceList(vm.Config.Hardware.Device).FindByKey(key)
	disk, ok := d.(*types.VirtualDisk)
	if !ok {
		return false
	}
	mode := ""
	switch b := disk.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		mode = b.DiskMode
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		if b.CompatibilityMode == string(types.VirtualDiskCompatibilityModePhysicalMode) {
			return false
		}
		mode = b.DiskMode
	}
	return !strings.HasPrefix(mode, "independent")
}

func (vm *labVM) writeSnapshotFile(node types.VirtualMachineSnapshotTree) string {
	dir := vm.Config.Files.SnapshotDirectory
	if dir == "" {
		dir = path.Dir(vm.Config.Files.VmPathName)
	}
	p, err := parseDatastorePath(dir)
	if err != nil {
		return ""
	}
	ds := findDatastoreByName(p.Datastore)
	if ds == nil {
		return ""
	}
	name := path.Join(p.Path, fmt.Sprintf("%s-Snapshot%d.vmsn", vm.Name, node.Id))
	text := fmt.Sprintf("bulwark-lab snapshot %q of %s taken %s\n", node.Name, vm.Name, node.CreateTime.Format(time.RFC3339))
	if err := os.WriteFile(localPath(ds, name), []byte(text), 0o600); err != nil {
		return ""
	}
	return (&object.DatastorePath{Datastore: p.Datastore, Path: name}).String()
}

// RemoveAllSnapshotsTask consolidates (here: forgets) every snapshot of the VM.
func (vm *labVM) RemoveAllSnapshotsTask(ctx *simulator.Context, req *types.RemoveAllSnapshots_Task) soap.HasFault {
	task := simulator.CreateTask(vm, "removeAllSnapshots", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		for vm.Snapshot != nil && len(vm.Snapshot.RootSnapshotList) > 0 {
			if fault := vm.removeSnapshot(vm.Snapshot.RootSnapshotList[0].Snapshot, true); fault != nil {
				return nil, fault
			}
		}
		return nil, nil
	})
	return &methods.RemoveAllSnapshots_TaskBody{Res: &types.RemoveAllSnapshots_TaskResponse{Returnval: task.Run()}}
}

// removeSnapshot takes ref (and its children, if removeChildren; else they move up to ref's
// parent) out of the tree. The caller holds the VM's lock.
func (vm *labVM) removeSnapshot(ref types.ManagedObjectReference, removeChildren bool) types.BaseMethodFault {
	if vm.Snapshot == nil || findSnapshot(vm.Snapshot.RootSnapshotList, ref) == nil {
		return &types.ManagedObjectNotFound{Obj: ref}
	}
	node := findSnapshot(vm.Snapshot.RootSnapshotList, ref)
	parent := findParent(vm.Snapshot.RootSnapshotList, ref)

	removed := []types.ManagedObjectReference{ref}
	if removeChildren {
		removed = append(removed, descendants(node.ChildSnapshotList)...)
	}
	gone := map[types.ManagedObjectReference]bool{}
	for _, r := range removed {
		gone[r] = true
	}

	tree := pruneTree(cloneTree(vm.Snapshot.RootSnapshotList), ref, removeChildren)

	// Keep the parent/child references of the snapshot objects in step with the tree.
	if parent != nil {
		if p, ok := simulator.Map.Get(*parent).(*labSnapshot); ok {
			kids := p.ChildSnapshot[:0]
			for _, c := range p.ChildSnapshot {
				if c != ref {
					kids = append(kids, c)
				}
			}
			if !removeChildren {
				for _, c := range node.ChildSnapshotList {
					kids = append(kids, c.Snapshot)
				}
			}
			p.ChildSnapshot = kids
		}
	}

	current := vm.Snapshot.CurrentSnapshot
	if current != nil && gone[*current] {
		current = parent
	}

	for _, r := range removed {
		if s, ok := simulator.Map.Get(r).(*labSnapshot); ok && s.dataFile != "" {
			if p, err := parseDatastorePath(s.dataFile); err == nil {
				if ds := findDatastoreByName(p.Datastore); ds != nil {
					_ = os.Remove(localPath(ds, p.Path))
				}
			}
			vm.dropLayoutFile(s.dataFile)
		}
	}
	var layout []types.VirtualMachineFileLayoutSnapshotLayout
	for _, l := range vm.Layout.Snapshot {
		if !gone[l.Key] {
			layout = append(layout, l)
		}
	}
	vm.Layout.Snapshot = layout
	var layoutEx []types.VirtualMachineFileLayoutExSnapshotLayout
	for _, l := range vm.LayoutEx.Snapshot {
		if !gone[l.Key] {
			layoutEx = append(layoutEx, l)
		}
	}
	vm.LayoutEx.Snapshot = layoutEx

	if len(tree) == 0 {
		simulator.Map.Update(vm, []types.PropertyChange{{Name: "snapshot", Val: nil}})
		vm.Snapshot = nil
	} else {
		vm.Snapshot.RootSnapshotList = tree
		vm.Snapshot.CurrentSnapshot = current
		// An untyped nil: a typed nil pointer here is what makes the simulator's own removal
		// panic (its property-change code cannot assign it).
		var currentVal interface{}
		if current != nil {
			currentVal = *current
		}
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "snapshot.rootSnapshotList", Val: tree},
			{Name: "snapshot.currentSnapshot", Val: currentVal},
		})
	}
	for _, r := range removed {
		simulator.Map.Remove(r)
	}
	return nil
}

// RemoveSnapshotTask removes this snapshot. The task's entity is the VM, as on vCenter (a
// snapshot is not a managed entity; the simulator's own code names the snapshot, which some
// clients cannot read back).
func (s *labSnapshot) RemoveSnapshotTask(ctx *simulator.Context, req *types.RemoveSnapshot_Task) soap.HasFault {
	task := simulator.CreateTask(s.Vm, "removeSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		vm, ok := simulator.Map.Get(s.Vm).(*labVM)
		if !ok {
			return nil, &types.ManagedObjectNotFound{Obj: s.Vm}
		}
		var fault types.BaseMethodFault
		simulator.Map.WithLock(vm, func() { fault = vm.removeSnapshot(req.This, req.RemoveChildren) })
		return nil, fault
	})
	return &methods.RemoveSnapshot_TaskBody{Res: &types.RemoveSnapshot_TaskResponse{Returnval: task.Run()}}
}

// RevertToSnapshotTask makes this snapshot the current one. As in the simulator, the VM's
// configuration and power state are left as they are.
func (s *labSnapshot) RevertToSnapshotTask(req *types.RevertToSnapshot_Task) soap.HasFault {
	task := simulator.CreateTask(s.Vm, "revertToSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		vm, ok := simulator.Map.Get(s.Vm).(*labVM)
		if !ok {
			return nil, &types.ManagedObjectNotFound{Obj: s.Vm}
		}
		simulator.Map.WithLock(vm, func() {
			current := s.Self
			vm.Snapshot.CurrentSnapshot = &current
			simulator.Map.Update(vm, []types.PropertyChange{{Name: "snapshot.currentSnapshot", Val: s.Self}})
		})
		return nil, nil
	})
	return &methods.RevertToSnapshot_TaskBody{Res: &types.RevertToSnapshot_TaskResponse{Returnval: task.Run()}}
}

// Snapshot tree helpers. The tree is copied before it is changed so that values already handed
// to property collector listeners are not altered underneath them.

func cloneTree(tree []types.VirtualMachineSnapshotTree) []types.VirtualMachineSnapshotTree {
	if tree == nil {
		return nil
	}
	out := make([]types.VirtualMachineSnapshotTree, len(tree))
	for i, n := range tree {
		out[i] = n
		out[i].ChildSnapshotList = cloneTree(n.ChildSnapshotList)
	}
	return out
}

func findSnapshot(tree []types.VirtualMachineSnapshotTree, ref types.ManagedObjectReference) *types.VirtualMachineSnapshotTree {
	for i := range tree {
		if tree[i].Snapshot == ref {
			return &tree[i]
		}
		if found := findSnapshot(tree[i].ChildSnapshotList, ref); found != nil {
			return found
		}
	}
	return nil
}

func findParent(tree []types.VirtualMachineSnapshotTree, ref types.ManagedObjectReference) *types.ManagedObjectReference {
	for i := range tree {
		for _, c := range tree[i].ChildSnapshotList {
			if c.Snapshot == ref {
				p := tree[i].Snapshot
				return &p
			}
		}
		if found := findParent(tree[i].ChildSnapshotList, ref); found != nil {
			return found
		}
	}
	return nil
}

func descendants(tree []types.VirtualMachineSnapshotTree) []types.ManagedObjectReference {
	var refs []types.ManagedObjectReference
	for _, n := range tree {
		refs = append(refs, n.Snapshot)
		refs = append(refs, descendants(n.ChildSnapshotList)...)
	}
	return refs
}

func pruneTree(tree []types.VirtualMachineSnapshotTree, ref types.ManagedObjectReference, removeChildren bool) []types.VirtualMachineSnapshotTree {
	var out []types.VirtualMachineSnapshotTree
	for _, n := range tree {
		if n.Snapshot == ref {
			if !removeChildren {
				out = append(out, n.ChildSnapshotList...)
			}
			continue
		}
		n.ChildSnapshotList = pruneTree(n.ChildSnapshotList, ref, removeChildren)
		out = append(out, n)
	}
	return out
}

// Datastore helpers.

func parseDatastorePath(s string) (*object.DatastorePath, error) {
	var p object.DatastorePath
	if !p.FromString(s) {
		return nil, fmt.Errorf("not a datastore path: %q", s)
	}
	return &p, nil
}

func findDatastoreByName(name string) *simulator.Datastore {
	for _, e := range simulator.Map.All("Datastore") {
		if ds, ok := e.(*simulator.Datastore); ok && ds.Name == name {
			return ds
		}
	}
	return nil
}

func localPath(ds *simulator.Datastore, p string) string {
	return filepath.Join(ds.Info.GetDatastoreInfo().Url, filepath.FromSlash(p))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// mappingExtent names the mapping file that sits beside an RDM's descriptor, as ESXi does:
// NAME-rdmp.vmdk for physical mode, NAME-rdm.vmdk for virtual mode.
func mappingExtent(descriptor, mode string) string {
	suffix := "-rdm.vmdk"
	if mode == string(types.VirtualDiskCompatibilityModePhysicalMode) {
		suffix = "-rdmp.vmdk"
	}
	return strings.TrimSuffix(descriptor, ".vmdk") + suffix
}

func writeMappingFiles(ds *simulator.Datastore, descriptor string, disk *types.VirtualDisk, b *types.VirtualDiskRawDiskMappingVer1BackingInfo) error {
	createType, extentType := "vmfsRawDeviceMap", "VMFSRDM"
	if b.CompatibilityMode == string(types.VirtualDiskCompatibilityModePhysicalMode) {
		createType, extentType = "vmfsPassthroughRawDeviceMap", "VMFSPASSTHROUGHRDM"
	}
	extent := mappingExtent(descriptor, b.CompatibilityMode)
	sectors := disk.CapacityInBytes / 512
	if sectors == 0 {
		sectors = disk.CapacityInKB * 2
	}
	text := fmt.Sprintf(`# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=fffffffe
parentCID=ffffffff
createType="%s"

# Extent description
RW %d %s "%s"

# The Disk Data Base
#DDB

ddb.adapterType = "pvscsi"
ddb.virtualHWVersion = "13"
ddb.bulwarkLab.lunUuid = "%s"
ddb.bulwarkLab.deviceName = "%s"
`, createType, sectors, extentType, path.Base(extent), b.LunUuid, b.DeviceName)
	if err := os.MkdirAll(filepath.Dir(localPath(ds, descriptor)), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(localPath(ds, descriptor), []byte(text), 0o600); err != nil {
		return err
	}
	// The mapping file itself is a pointer to the LUN; it holds none of the LUN's data.
	return os.WriteFile(localPath(ds, extent), []byte("bulwark-lab raw device mapping to "+b.DeviceName+"\n"), 0o600)
}

var _ mo.Reference = (*labVM)(nil)
