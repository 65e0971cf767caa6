package main

import (
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Changed block tracking, as vSphere offers it to backup tools: every snapshot of a VM with
// changeTrackingEnabled records a change id on each of its disks (flat VMDKs and virtual-mode
// RDMs), and QueryChangedDiskAreas answers which areas were written between an earlier change
// id and a snapshot. The lab has no hypervisor that sees the writes, so it works from content:
// when a snapshot is taken it keeps a hash of every 64 KiB of each disk's data file, and the
// areas whose hash differs are the changed ones. Change id "*" means every area in use (here:
// every non-zero 64 KiB). An unknown change id is an InvalidArgument fault, as after a CBT
// reset on vCenter. The simulator itself implements none of this.

const cbtBlock = 64 * 1024

type cbtEpoch struct {
	size   int64
	hashes []uint64
}

var cbt = struct {
	sync.Mutex
	seq    int
	epochs map[string]cbtEpoch // change id + "\x00" + disk key -> state of the disk then
	owner  map[string]string   // change id -> the VM whose snapshot gave it
}{epochs: map[string]cbtEpoch{}, owner: map[string]string{}}

// forgetChangeIDs drops every change id of a VM, as vCenter does when changed block tracking
// is turned off (the first half of a CBT reset): asking about one later is a fault.
func forgetChangeIDs(vm string) {
	cbt.Lock()
	defer cbt.Unlock()
	for id, owner := range cbt.owner {
		if owner != vm {
			continue
		}
		delete(cbt.owner, id)
		for key := range cbt.epochs {
			if strings.HasPrefix(key, id+"\x00") {
				delete(cbt.epochs, key)
			}
		}
	}
}

func cbtKey(changeID string, key int32) string { return fmt.Sprintf("%s\x00%d", changeID, key) }

// diskDataFile is the local file holding a disk's bytes: NAME-flat.vmdk, or a virtual-mode
// RDM's mapping extent (which the lab fills with the LUN's content).
func diskDataFile(disk *types.VirtualDisk) (string, bool) {
	var name string
	switch b := disk.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		name = b.FileName
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		if b.CompatibilityMode != string(types.VirtualDiskCompatibilityModeVirtualMode) {
			return "", false
		}
		name = b.FileName
	default:
		return "", false
	}
	p, err := parseDatastorePath(name)
	if err != nil {
		return "", false
	}
	ds := findDatastoreByName(p.Datastore)
	if ds == nil {
		return "", false
	}
	extent := strings.TrimSuffix(p.Path, ".vmdk") + "-flat.vmdk"
	if _, rdm := disk.Backing.(*types.VirtualDiskRawDiskMappingVer1BackingInfo); rdm {
		extent = mappingExtent(p.Path, string(types.VirtualDiskCompatibilityModeVirtualMode))
	}
	return localPath(ds, extent), true
}

func hashDisk(file string) (cbtEpoch, error) {
	f, err := os.Open(file)
	if err != nil {
		return cbtEpoch{}, err
	}
	defer f.Close()
	var e cbtEpoch
	buf := make([]byte, cbtBlock)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			h := fnv.New64a()
			_, _ = h.Write(buf[:n])
			sum := h.Sum64()
			if isZero(buf[:n]) {
				sum = 0
			}
			e.hashes = append(e.hashes, sum)
			e.size += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return e, nil
		}
		if err != nil {
			return cbtEpoch{}, err
		}
	}
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// snapshotDevices gives a snapshot its own copy of the VM's devices, with a fresh change id
// on every tracked disk when the VM has changed block tracking on.
func (vm *labVM) snapshotDevices() []types.BaseVirtualDevice {
	tracked := vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
	cbt.Lock()
	defer cbt.Unlock()
	cbt.seq++
	changeID := fmt.Sprintf("52 6c 1a b0 %08x-lab/%d", cbt.seq, cbt.seq)
	var out []types.BaseVirtualDevice
	for _, dev := range vm.Config.Hardware.Device {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			out = append(out, dev)
			continue
		}
		copied := *disk
		file, hasData := diskDataFile(disk)
		id := ""
		if tracked && hasData && vm.inSnapshots(disk.Key) {
			if e, err := hashDisk(file); err == nil {
				cbt.epochs[cbtKey(changeID, disk.Key)] = e
				cbt.owner[changeID] = vm.Self.Value
				id = changeID
			}
		}
		switch b := disk.Backing.(type) {
		case *types.VirtualDiskFlatVer2BackingInfo:
			nb := *b
			nb.ChangeId = id
			copied.Backing = &nb
		case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
			nb := *b
			nb.ChangeId = id
			copied.Backing = &nb
		}
		out = append(out, &copied)
	}
	return out
}

// QueryChangedDiskAreas answers from the hashes kept at the two change ids (see above).
func (vm *labVM) QueryChangedDiskAreas(req *types.QueryChangedDiskAreas) soap.HasFault {
	body := &methods.QueryChangedDiskAreasBody{}
	fail := func(msg string) soap.HasFault {
		body.Fault_ = simulator.Fault(msg, &types.InvalidArgument{InvalidProperty: "changeId"})
		return body
	}
	if vm.Config.ChangeTrackingEnabled == nil || !*vm.Config.ChangeTrackingEnabled {
		return fail("changed block tracking is not enabled on " + vm.Name)
	}
	if req.Snapshot == nil {
		return fail("the lab answers for snapshots only")
	}
	snap, ok := simulator.Map.Get(*req.Snapshot).(*labSnapshot)
	if !ok {
		body.Fault_ = simulator.Fault("", &types.ManagedObjectNotFound{Obj: *req.Snapshot})
		return body
	}
	disk, ok := object.VirtualDeviceList(snap.Config.Hardware.Device).FindByKey(req.DeviceKey).(*types.VirtualDisk)
	if !ok {
		return fail(fmt.Sprintf("the snapshot has no disk %d", req.DeviceKey))
	}
	now := ""
	switch b := disk.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		now = b.ChangeId
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		now = b.ChangeId
	}
	cbt.Lock()
	current, haveNow := cbt.epochs[cbtKey(now, req.DeviceKey)]
	earlier, haveEarlier := cbt.epochs[cbtKey(req.ChangeId, req.DeviceKey)]
	cbt.Unlock()
	if !haveNow {
		return fail("the snapshot's disk has no change id")
	}
	if req.ChangeId != "*" && !haveEarlier {
		return fail(fmt.Sprintf("unknown change id %q", req.ChangeId))
	}
	start := req.StartOffset
	if start < 0 || start > current.size {
		return fail("startOffset is outside the disk")
	}
	var areas []types.DiskChangeExtent
	for i, h := range current.hashes {
		offset := int64(i) * cbtBlock
		if offset+cbtBlock <= start {
			continue
		}
		changed := h != 0
		if req.ChangeId != "*" {
			changed = i >= len(earlier.hashes) || earlier.hashes[i] != h
		}
		if !changed {
			continue
		}
		length := int64(cbtBlock)
		if offset+length > current.size {
			length = current.size - offset
		}
		if n := len(areas); n > 0 && areas[n-1].Start+areas[n-1].Length == offset {
			areas[n-1].Length += length
		} else {
			areas = append(areas, types.DiskChangeExtent{Start: offset, Length: length})
		}
	}
	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: types.DiskChangeInfo{
		StartOffset: start, Length: current.size - start, ChangedArea: areas,
	}}
	return body
}
