package main

import (
	"fmt"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// A VM's .vmx read over /folder, as ESXi serves it: the VM's configuration as it is now.
//
// The simulator writes an empty .vmx when it creates a VM and never updates it, so a client
// that keeps the .vmx beside a backup (Bulwark does, for a whole-VM restore) would keep
// nothing. The lab answers GET and HEAD of a VM's .vmx path with a .vmx rendered from the
// VM's configuration (hardware, controllers, disks, NICs, extraConfig); every other /folder
// request, and a .vmx no VM is registered at, go to the simulator.

func serveVMX(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method != http.MethodGet && r.Method != http.MethodHead) ||
			!strings.HasPrefix(r.URL.Path, "/folder/") || !strings.HasSuffix(r.URL.Path, ".vmx") {
			next.ServeHTTP(w, r)
			return
		}
		name := fmt.Sprintf("[%s] %s", r.URL.Query().Get("dsName"), strings.TrimPrefix(r.URL.Path, "/folder/"))
		text, ok := renderVMX(name)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(text)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write([]byte(text))
		}
	})
}

// renderVMX finds the VM registered at the datastore path name and renders its .vmx.
func renderVMX(name string) (string, bool) {
	for _, e := range simulator.Map.All("VirtualMachine") {
		ref := e.Reference()
		var text string
		found := false
		simulator.Map.WithLock(simulator.Map.Get(ref), func() {
			m := vmMO(ref)
			if m == nil || m.Config == nil || m.Config.Files.VmPathName != name {
				return
			}
			text, found = vmxText(m), true
		})
		if found {
			return text, true
		}
	}
	return "", false
}

var vmxControllerDev = map[string]string{
	"ParaVirtualSCSIController":    "pvscsi",
	"VirtualLsiLogicController":    "lsilogic",
	"VirtualLsiLogicSASController": "lsisas1068",
	"VirtualBusLogicController":    "buslogic",
}

func vmxText(m *mo.VirtualMachine) string {
	c := m.Config
	var b strings.Builder
	line := func(key string, value interface{}) { fmt.Fprintf(&b, "%s = \"%v\"\n", key, value) }
	line(".encoding", "UTF-8")
	line("config.version", "8")
	line("virtualHW.version", strings.TrimPrefix(c.Version, "vmx-"))
	line("displayName", m.Name)
	line("guestOS", c.GuestId)
	line("firmware", c.Firmware)
	line("numvcpus", c.Hardware.NumCPU)
	line("cpuid.coresPerSocket", c.Hardware.NumCoresPerSocket)
	line("memSize", c.Hardware.MemoryMB)
	line("uuid.bios", c.Uuid)
	line("vc.uuid", c.InstanceUuid)
	if c.Annotation != "" {
		line("annotation", strings.ReplaceAll(c.Annotation, "\n", "|0A"))
	}
	dir := path.Dir(c.Files.VmPathName)
	buses := map[int32]string{} // controller key -> "scsi1"
	nics := 0
	for _, d := range c.Hardware.Device {
		switch dev := d.(type) {
		case types.BaseVirtualSCSIController:
			ctl := dev.GetVirtualSCSIController()
			id := fmt.Sprintf("scsi%d", ctl.BusNumber)
			buses[ctl.Key] = id
			line(id+".present", "TRUE")
			kind := fmt.Sprintf("%T", d)
			line(id+".virtualDev", vmxControllerDev[strings.TrimPrefix(kind, "*types.")])
			line(id+".sharedBus", strings.TrimSuffix(string(ctl.SharedBus), "Sharing"))
		}
	}
	for _, d := range c.Hardware.Device {
		switch dev := d.(type) {
		case *types.VirtualDisk:
			id, ok := buses[dev.ControllerKey]
			if !ok || dev.UnitNumber == nil {
				continue
			}
			id = fmt.Sprintf("%s:%d", id, *dev.UnitNumber)
			line(id+".present", "TRUE")
			if file, ok := dev.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
				name := file.GetVirtualDeviceFileBackingInfo().FileName
				if path.Dir(name) == dir {
					name = path.Base(name) // beside the .vmx: relative, as ESXi writes it
				}
				line(id+".fileName", name)
			}
			switch back := dev.Backing.(type) {
			case *types.VirtualDiskFlatVer2BackingInfo:
				line(id+".mode", back.DiskMode)
			case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
				line(id+".mode", back.DiskMode)
				line(id+".deviceType", "rawDisk")
			}
		case types.BaseVirtualEthernetCard:
			card := dev.GetVirtualEthernetCard()
			id := fmt.Sprintf("ethernet%d", nics)
			nics++
			line(id+".present", "TRUE")
			kind := strings.ToLower(strings.TrimPrefix(fmt.Sprintf("%T", d), "*types.Virtual"))
			line(id+".virtualDev", kind)
			if back, ok := card.Backing.(*types.VirtualEthernetCardNetworkBackingInfo); ok {
				line(id+".networkName", back.DeviceName)
			}
			line(id+".addressType", card.AddressType)
			line(id+".generatedAddress", card.MacAddress)
			connected := card.Connectable == nil || card.Connectable.StartConnected
			line(id+".startConnected", strings.ToUpper(strconv.FormatBool(connected)))
		}
	}
	var extra []string
	for _, o := range c.ExtraConfig {
		v := o.GetOptionValue()
		extra = append(extra, fmt.Sprintf("%s = \"%v\"\n", v.Key, v.Value))
	}
	sort.Strings(extra)
	for _, e := range extra {
		b.WriteString(e)
	}
	return b.String()
}
