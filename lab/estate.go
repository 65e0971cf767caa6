package main

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// The estate the lab lays out. Names are the ones an operator would see in the vSphere Client.
const (
	datacenterName  = "LAB-DC1"
	clusterName     = "CL-PROD-01"
	systemDatastore = "VMFS-SYS-01"      // VM homes, system disks, RDM mapping files
	dbDatastore     = "VMFS-EXCH-DB-01"  // Exchange database VMDKs
	logDatastore    = "VMFS-EXCH-LOG-01" // Exchange transaction log VMDKs
	exchangeFolder  = "Exchange"
	workloadFolder  = "Workloads"

	// ExchangeAttribute is the vSphere custom attribute that tells Bulwark which database and
	// logs live on which disk of an Exchange VM. Format: see README.md ("Custom attribute").
	ExchangeAttribute = "bulwark.exchange"
	// OwnerAttribute is a second, ordinary custom attribute, so that readers have to resolve
	// field keys to names rather than assume a single field.
	OwnerAttribute = "owner"

	gib = int64(1) << 30
)

// Estate is written to estate.json: the lab's own description of what it serves, used by tests
// as the expected answer. The schema is documented in README.md.
type Estate struct {
	Schema          string  `json:"schema"`
	URL             string  `json:"url"`
	Host            string  `json:"host"`
	Port            int     `json:"port"`
	Username        string  `json:"username"`
	Password        string  `json:"password"`
	TLSThumbprint   string  `json:"tls_thumbprint_sha256"`
	GuestUsername   string  `json:"guest_username"` // the stand-in guest's account (guest.go)
	GuestPassword   string  `json:"guest_password"`
	GuestLog        string  `json:"guest_log"` // JSON lines, one per guest process
	StartupSeconds  float64 `json:"startup_seconds"`
	BuildSeconds    float64 `json:"build_seconds"`
	CustomAttribute string  `json:"custom_attribute"`
	OwnerAttribute  string  `json:"owner_attribute"`

	Datacenter      Entity       `json:"datacenter"`
	Clusters        []Cluster    `json:"clusters"`
	Hosts           []Host       `json:"hosts"`
	Datastores      []Datastore  `json:"datastores"`
	VMCountTotal    int          `json:"vm_count_total"`
	OrdinaryVMCount int          `json:"ordinary_vm_count"`
	OrdinaryVMs     []OrdinaryVM `json:"ordinary_vms"`
	ExchangeVMs     []ExchangeVM `json:"exchange_vms"`
	Luns            []Lun        `json:"luns"`
}

type Entity struct {
	Name  string `json:"name"`
	Moref string `json:"moref"`
}

type Cluster struct {
	Entity
	Hosts []string `json:"hosts"`
}

type Host struct {
	Entity
	Cluster string `json:"cluster"`
}

type Datastore struct {
	Entity
	Role          string `json:"role"`
	CapacityBytes int64  `json:"capacity_bytes"`
	LocalPath     string `json:"local_path"`
}

type OrdinaryVM struct {
	Entity
	PowerState string   `json:"power_state"`
	Snapshots  []string `json:"snapshots,omitempty"`
	Owner      string   `json:"owner,omitempty"`
}

type ExchangeVM struct {
	Entity
	Layout          string     `json:"layout"`
	Description     string     `json:"description"`
	InstanceUUID    string     `json:"instance_uuid"`
	BiosUUID        string     `json:"bios_uuid"`
	Host            string     `json:"host"`
	PowerState      string     `json:"power_state"`
	CBTEnabled      bool       `json:"cbt_enabled"`
	CustomAttribute *string    `json:"custom_attribute"`
	Owner           string     `json:"owner"`
	Databases       []Database `json:"databases"`
	Disks           []Disk     `json:"disks"`
}

type Database struct {
	Name    string `json:"name"`
	DiskKey int32  `json:"disk"`
	LogsKey int32  `json:"logs"`
	Layout  string `json:"layout"`
}

type Disk struct {
	Key           int32    `json:"key"`
	Label         string   `json:"label"`
	Controller    string   `json:"controller"`
	Backing       string   `json:"backing"`
	DiskMode      string   `json:"disk_mode"`
	Datastore     string   `json:"datastore"`
	DatastoreName string   `json:"datastore_name"`
	FileName      string   `json:"file_name"`
	CapacityBytes int64    `json:"capacity_bytes"`
	Role          string   `json:"role"`
	Databases     []string `json:"databases"`
	LunUUID       string   `json:"lun_uuid,omitempty"`
	CanonicalName string   `json:"canonical_name,omitempty"`
	DeviceName    string   `json:"device_name,omitempty"`
	LocalPath     string   `json:"local_path,omitempty"`
	ContentBytes  int64    `json:"content_bytes,omitempty"`
	ContentSHA256 string   `json:"content_sha256,omitempty"`
}

type Lun struct {
	CanonicalName string `json:"canonical_name"`
	LunUUID       string `json:"lun_uuid"`
	CapacityBytes int64  `json:"capacity_bytes"`
	UsedBy        string `json:"used_by"`
	Purpose       string `json:"purpose"`
}

// Plans for the Exchange servers.

type diskPlan struct {
	bus, unit int32
	role      string // system, database, logs
	backing   string // flat, rdm-physical, rdm-virtual
	datastore string
	capacity  int64
	databases []string
}

type dbPlan struct {
	name       string
	disk, logs int // indexes into the disk plans
}

type exchangePlan struct {
	name        string
	layout      string
	description string
	cbt         bool
	annotated   bool
	disks       []diskPlan
	dbs         []dbPlan
}

func sysDisk() diskPlan {
	return diskPlan{bus: 0, unit: 0, role: "system", backing: "flat", datastore: systemDatastore, capacity: 100 * gib}
}

// exchangePlans covers each database layout of the whitepaper: database on its own VMDK, on a
// physical-mode RDM, on a virtual-mode RDM; two servers hold several databases with separate
// log disks; one server carries no custom attribute.
func exchangePlans() []exchangePlan {
	return []exchangePlan{
		{
			name: "EXCH-MBX01", layout: "vmdk", cbt: true, annotated: true,
			description: "database on its own VMDK, logs on another VMDK",
			disks: []diskPlan{
				sysDisk(),
				{bus: 1, unit: 0, role: "database", backing: "flat", datastore: dbDatastore, capacity: 500 * gib, databases: []string{"DB01"}},
				{bus: 2, unit: 0, role: "logs", backing: "flat", datastore: logDatastore, capacity: 100 * gib, databases: []string{"DB01"}},
			},
			dbs: []dbPlan{{"DB01", 1, 2}},
		},
		{
			name: "EXCH-MBX02", layout: "rdm-physical", annotated: true,
			description: "database and logs on physical-mode RDM LUNs (array snapshots)",
			disks: []diskPlan{
				sysDisk(),
				{bus: 1, unit: 0, role: "database", backing: "rdm-physical", datastore: systemDatastore, capacity: 1024 * gib, databases: []string{"DB02"}},
				{bus: 2, unit: 0, role: "logs", backing: "rdm-physical", datastore: systemDatastore, capacity: 200 * gib, databases: []string{"DB02"}},
			},
			dbs: []dbPlan{{"DB02", 1, 2}},
		},
		{
			name: "EXCH-MBX03", layout: "rdm-virtual", cbt: true, annotated: true,
			description: "database and logs on virtual-mode RDM LUNs (VMFS snapshots through a proxy)",
			disks: []diskPlan{
				sysDisk(),
				{bus: 1, unit: 0, role: "database", backing: "rdm-virtual", datastore: systemDatastore, capacity: 750 * gib, databases: []string{"DB03"}},
				{bus: 2, unit: 0, role: "logs", backing: "rdm-virtual", datastore: systemDatastore, capacity: 150 * gib, databases: []string{"DB03"}},
			},
			dbs: []dbPlan{{"DB03", 1, 2}},
		},
		{
			name: "EXCH-MBX04", layout: "vmdk", cbt: true, annotated: true,
			description: "three databases on VMDKs, each with its own log VMDK",
			disks: []diskPlan{
				sysDisk(),
				{bus: 1, unit: 0, role: "database", backing: "flat", datastore: dbDatastore, capacity: 400 * gib, databases: []string{"DB11"}},
				{bus: 1, unit: 1, role: "database", backing: "flat", datastore: dbDatastore, capacity: 400 * gib, databases: []string{"DB12"}},
				{bus: 1, unit: 2, role: "database", backing: "flat", datastore: dbDatastore, capacity: 400 * gib, databases: []string{"DB13"}},
				{bus: 2, unit: 0, role: "logs", backing: "flat", datastore: logDatastore, capacity: 80 * gib, databases: []string{"DB11"}},
				{bus: 2, unit: 1, role: "logs", backing: "flat", datastore: logDatastore, capacity: 80 * gib, databases: []string{"DB12"}},
				{bus: 2, unit: 2, role: "logs", backing: "flat", datastore: logDatastore, capacity: 80 * gib, databases: []string{"DB13"}},
			},
			dbs: []dbPlan{{"DB11", 1, 4}, {"DB12", 2, 5}, {"DB13", 3, 6}},
		},
		{
			name: "EXCH-MBX05", layout: "rdm-physical", annotated: true,
			description: "two databases on physical-mode RDM LUNs, each with its own log LUN",
			disks: []diskPlan{
				sysDisk(),
				{bus: 1, unit: 0, role: "database", backing: "rdm-physical", datastore: systemDatastore, capacity: 2048 * gib, databases: []string{"DB21"}},
				{bus: 1, unit: 1, role: "database", backing: "rdm-physical", datastore: systemDatastore, capacity: 2048 * gib, databases: []string{"DB22"}},
				{bus: 2, unit: 0, role: "logs", backing: "rdm-physical", datastore: systemDatastore, capacity: 256 * gib, databases: []string{"DB21"}},
				{bus: 2, unit: 1, role: "logs", backing: "rdm-physical", datastore: systemDatastore, capacity: 256 * gib, databases: []string{"DB22"}},
			},
			dbs: []dbPlan{{"DB21", 1, 3}, {"DB22", 2, 4}},
		},
		{
			name: "EXCH-MBX06", layout: "vmdk", annotated: false,
			description: "database and logs on VMDKs; nobody has set the custom attribute yet",
			disks: []diskPlan{
				sysDisk(),
				{bus: 1, unit: 0, role: "database", backing: "flat", datastore: dbDatastore, capacity: 300 * gib, databases: []string{"DB31"}},
				{bus: 2, unit: 0, role: "logs", backing: "flat", datastore: logDatastore, capacity: 60 * gib, databases: []string{"DB31"}},
			},
			dbs: []dbPlan{{"DB31", 1, 2}},
		},
	}
}

// diskKey numbers disks 2000 + 16 × SCSI bus + unit (the lab's convention; vCenter also numbers
// SCSI disks from 2000).
func diskKey(bus, unit int32) int32 { return 2000 + 16*bus + unit }

// attributeValue renders the custom attribute for a plan: "DB01=disk:2016;logs:2032 | ...".
func attributeValue(p exchangePlan) string {
	var parts []string
	for _, db := range p.dbs {
		d, l := p.disks[db.disk], p.disks[db.logs]
		parts = append(parts, fmt.Sprintf("%s=disk:%d;logs:%d", db.name, diskKey(d.bus, d.unit), diskKey(l.bus, l.unit)))
	}
	return strings.Join(parts, " | ")
}

// lunIDs derives a stable NAA id for a LUN from its name, in the form a Linux (LIO) target
// reports (vendor OUI 001405), and the lunUuid ESXi builds from it.
func lunIDs(name string) (canonical, lunUUID string) {
	sum := sha1.Sum([]byte("bulwark-lab/" + name))
	naa := "6001405" + hex.EncodeToString(sum[:])[:25]
	// ESXi's ScsiLun.uuid: "02" + peripheral/LUN bytes + the NAA id + the product id in hex.
	return "naa." + naa, "0200000000" + naa + hex.EncodeToString([]byte("FILEIO"))
}

type builder struct {
	ctx      context.Context
	c        *vim25.Client
	o        options
	estate   *Estate
	dc       *object.Datacenter
	folders  *object.DatacenterFolders
	pool     *object.ResourcePool
	hosts    []*object.HostSystem
	dsByName map[string]*simulator.Datastore
	luns     []Lun
}

func buildEstate(ctx context.Context, c *vim25.Client, o options) (*Estate, error) {
	b := &builder{
		ctx: ctx, c: c, o: o,
		estate:   &Estate{Schema: "bulwark-lab-estate/1", CustomAttribute: ExchangeAttribute, OwnerAttribute: OwnerAttribute},
		dsByName: map[string]*simulator.Datastore{},
	}
	// Building makes millions of short-lived objects; collecting garbage less often while
	// building cuts the start of a 5,000-VM estate by a fifth.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	steps := []func() error{b.inventory, b.datastores, b.exchangeServers, b.ordinaryVMs, b.attributes, b.scsiLuns}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	b.estate.Luns = b.luns
	b.estate.OrdinaryVMCount = len(b.estate.OrdinaryVMs)
	b.estate.VMCountTotal = len(b.estate.OrdinaryVMs) + len(b.estate.ExchangeVMs)
	return b.estate, nil
}

// taskResult reads a finished task straight from the simulator: its tasks run to completion
// inside the call that starts them, and waiting through a PropertyCollector for each of
// thousands of VMs would slow the start.
func taskResult(task *object.Task, err error) (types.AnyType, error) {
	if err != nil {
		return nil, err
	}
	t, ok := simulator.Map.Get(task.Reference()).(*simulator.Task)
	if !ok {
		return nil, fmt.Errorf("task %v vanished", task.Reference())
	}
	defer simulator.Map.Remove(t.Self) // build-time tasks are of no interest to clients
	if t.Info.Error != nil {
		return nil, fmt.Errorf("%s: %T %s", t.Info.DescriptionId, t.Info.Error.Fault, t.Info.Error.LocalizedMessage)
	}
	return t.Info.Result, nil
}

func (b *builder) inventory() error {
	root := object.NewRootFolder(b.c)
	dc, err := root.CreateDatacenter(b.ctx, datacenterName)
	if err != nil {
		return err
	}
	b.dc = dc
	if b.folders, err = dc.Folders(b.ctx); err != nil {
		return err
	}
	b.estate.Datacenter = Entity{datacenterName, dc.Reference().Value}

	cluster, err := b.folders.HostFolder.CreateCluster(b.ctx, clusterName, types.ClusterConfigSpecEx{})
	if err != nil {
		return err
	}
	hosts := b.o.hosts
	if hosts <= 0 {
		hosts = 4
		if n := (b.o.vms + 249) / 250; n > hosts {
			hosts = n
		}
	}
	info := Cluster{Entity: Entity{clusterName, cluster.Reference().Value}}
	for i := 0; i < hosts; i++ {
		name := fmt.Sprintf("esx%02d.lab.bulwark.test", i+1)
		res, err := taskResult(cluster.AddHost(b.ctx, types.HostConnectSpec{HostName: name}, true, nil, nil))
		if err != nil {
			return err
		}
		ref := res.(types.ManagedObjectReference)
		b.hosts = append(b.hosts, object.NewHostSystem(b.c, ref))
		info.Hosts = append(info.Hosts, ref.Value)
		b.estate.Hosts = append(b.estate.Hosts, Host{Entity{name, ref.Value}, cluster.Reference().Value})
	}
	b.estate.Clusters = []Cluster{info}
	b.pool, err = cluster.ResourcePool(b.ctx)
	return err
}

func (b *builder) generalDatastores() []string {
	n := 2 + b.o.vms/1000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("VMFS-GEN-%02d", i+1)
	}
	return names
}

// datastores creates shared VMFS datastores mounted on every host. Each is a folder under the
// state directory, served over /folder.
func (b *builder) datastores() error {
	type plan struct {
		name, role string
		capacity   int64
	}
	plans := []plan{
		{systemDatastore, "VM homes, system disks and RDM mapping files", 4096 * gib},
		{dbDatastore, "Exchange database VMDKs", 8192 * gib},
		{logDatastore, "Exchange transaction log VMDKs", 2048 * gib},
	}
	for _, name := range b.generalDatastores() {
		plans = append(plans, plan{name, "general workloads", 16384 * gib})
	}
	base := filepath.Join(b.o.stateDir, "datastores")
	// A reused --state-dir must not hold a previous run's VM folders: the simulator would
	// rename new VM folders around them.
	if err := os.RemoveAll(base); err != nil {
		return err
	}
	for i, p := range plans {
		dir := filepath.Join(base, p.name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		ds, err := b.sharedDatastore(p.name, dir, fmt.Sprintf("datastore-%d", 101+i))
		if err != nil {
			return err
		}
		b.makeSharedVMFS(ds, p.capacity)
		b.dsByName[p.name] = ds
		b.estate.Datastores = append(b.estate.Datastores, Datastore{Entity{p.name, ds.Self.Value}, p.role, p.capacity, dir})
	}
	return nil
}

// sharedDatastore creates a datastore through the first host and mounts it on the others.
//
// The simulator names a datastore after its local folder ("/tmp/...@folder-5"), which would put
// a path of this machine into every datastore reference Bulwark stores; a vCenter calls it
// "datastore-NNN". The datastore is renamed before any VM refers to it, in each place that
// holds its reference. Mounting it on the other hosts by reference (rather than creating it
// once per host, as the simulator's own models do) keeps one object with every host mount.
func (b *builder) sharedDatastore(name, dir, moref string) (*simulator.Datastore, error) {
	first := b.hosts[0]
	dssRef, err := first.ConfigManager().DatastoreSystem(b.ctx)
	if err != nil {
		return nil, err
	}
	created, err := dssRef.CreateLocalDatastore(b.ctx, name, dir)
	if err != nil {
		return nil, err
	}
	old := created.Reference()
	ds := simulator.Map.Get(old).(*simulator.Datastore)
	ref := types.ManagedObjectReference{Type: "Datastore", Value: moref}

	dss := simulator.Map.Get(dssRef.Reference()).(*simulator.HostDatastoreSystem)
	replaceRef(dss.Datastore, old, ref) // also the host's list: the simulator shares the slice
	replaceRef(dss.Host.Datastore, old, ref)
	cluster := simulator.Map.Get(*dss.Host.Parent).(*simulator.ClusterComputeResource)
	replaceRef(cluster.Datastore, old, ref)
	dc := simulator.Map.Get(b.dc.Reference()).(*simulator.Datacenter)
	replaceRef(dc.Datastore, old, ref)
	folder := simulator.Map.Get(*ds.Parent).(*simulator.Folder)
	replaceRef(folder.ChildEntity, old, ref)
	if browser, ok := simulator.Map.Get(ds.Browser).(*simulator.HostDatastoreBrowser); ok {
		replaceRef(browser.Datastore, old, ref)
	}
	simulator.Map.Remove(old)
	ds.Self = ref
	ds.Summary.Datastore = &ref
	simulator.Map.Put(ds)

	for _, h := range b.hosts[1:] {
		other := simulator.Map.Get(h.Reference()).(*simulator.HostSystem)
		otherDss := simulator.Map.Get(*other.ConfigManager.DatastoreSystem).(*simulator.HostDatastoreSystem)
		otherDss.Datastore = append(otherDss.Datastore, ref)
		other.Datastore = otherDss.Datastore
	}
	return ds, nil
}

func replaceRef(refs []types.ManagedObjectReference, old, ref types.ManagedObjectReference) {
	for i := range refs {
		if refs[i] == old {
			refs[i] = ref
		}
	}
}

// makeSharedVMFS turns the simulator's "local" datastore into what an Exchange estate has: a
// VMFS volume on a SAN LUN, mounted on every host of the cluster, with a size of its own rather
// than the size of this machine's disk.
func (b *builder) makeSharedVMFS(ds *simulator.Datastore, capacity int64) {
	canonical, lunUUID := lunIDs("vmfs/" + ds.Name)
	b.luns = append(b.luns, Lun{canonical, lunUUID, capacity, ds.Name, "VMFS volume"})
	info := ds.Info.GetDatastoreInfo()
	info.FreeSpace = capacity
	info.MaxFileSize = 62 * 1024 * gib
	ds.Info = &types.VmfsDatastoreInfo{
		DatastoreInfo:          *info,
		MaxPhysicalRDMFileSize: 64 * 1024 * gib,
		MaxVirtualRDMFileSize:  62 * 1024 * gib,
		Vmfs: &types.HostVmfsVolume{
			HostFileSystemVolume: types.HostFileSystemVolume{Type: "VMFS", Name: ds.Name, Capacity: capacity},
			BlockSizeMb:          1,
			MaxBlocks:            63 * 1024 * 1024,
			MajorVersion:         6,
			Version:              "6.82",
			Uuid:                 lunUUID[10:18] + "-" + lunUUID[18:26] + "-" + lunUUID[26:30] + "-" + lunUUID[30:42],
			Extent:               []types.HostScsiDiskPartition{{DiskName: canonical, Partition: 1}},
		},
	}
	ds.Summary.Type = "VMFS"
	ds.Summary.Capacity = capacity
	ds.Summary.FreeSpace = capacity
	ds.Summary.MultipleHostAccess = types.NewBool(true)
	ds.Capability.RawDiskMappingsSupported = true
	ds.Host = nil
	for _, h := range b.hosts {
		ds.Host = append(ds.Host, types.DatastoreHostMount{
			Key: h.Reference(),
			MountInfo: types.HostMountInfo{
				Path:       "/vmfs/volumes/" + ds.Name,
				AccessMode: string(types.HostMountModeReadWrite),
				Mounted:    types.NewBool(true),
				Accessible: types.NewBool(true),
			},
		})
	}
}

func (b *builder) vmFolder(p string) (*object.Folder, error) {
	folder := b.folders.VmFolder
	for _, name := range strings.Split(p, "/") {
		found, err := b.childFolder(folder, name)
		if err != nil {
			return nil, err
		}
		folder = found
	}
	return folder, nil
}

func (b *builder) childFolder(parent *object.Folder, name string) (*object.Folder, error) {
	f := simulator.Map.Get(parent.Reference()).(*simulator.Folder)
	if e := simulator.Map.FindByName(name, f.ChildEntity); e != nil {
		return object.NewFolder(b.c, e.Reference()), nil
	}
	return parent.CreateFolder(b.ctx, name)
}

func scsiController(bus int32) *types.VirtualDeviceConfigSpec {
	unit := int32(3 + bus) // PCI slots after the default devices
	return &types.VirtualDeviceConfigSpec{
		Operation: types.VirtualDeviceConfigSpecOperationAdd,
		Device: &types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{
			VirtualController: types.VirtualController{
				VirtualDevice: types.VirtualDevice{
					Key:           1000 + bus,
					ControllerKey: 100,
					UnitNumber:    &unit,
					DeviceInfo:    &types.Description{Label: fmt.Sprintf("SCSI controller %d", bus), Summary: "VMware paravirtual SCSI"},
				},
				BusNumber: bus,
			},
			SharedBus:          types.VirtualSCSISharingNoSharing,
			ScsiCtlrUnitNumber: 7,
		}},
	}
}

func nic() *types.VirtualDeviceConfigSpec {
	unit := int32(7)
	return &types.VirtualDeviceConfigSpec{
		Operation: types.VirtualDeviceConfigSpecOperationAdd,
		Device: &types.VirtualVmxnet3{VirtualVmxnet: types.VirtualVmxnet{VirtualEthernetCard: types.VirtualEthernetCard{
			VirtualDevice: types.VirtualDevice{
				Key:           4000,
				ControllerKey: 100,
				UnitNumber:    &unit,
				DeviceInfo:    &types.Description{Label: "Network adapter 1", Summary: "VM Network"},
				Backing: &types.VirtualEthernetCardNetworkBackingInfo{
					VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "VM Network"},
				},
			},
			AddressType: string(types.VirtualEthernetCardMacTypeGenerated),
		}}},
	}
}

func flatDisk(vmName string, n int, bus, unit int32, datastore string, capacity int64) *types.VirtualDeviceConfigSpec {
	file := fmt.Sprintf("[%s] %s/%s.vmdk", datastore, vmName, vmName)
	if n > 0 {
		file = fmt.Sprintf("[%s] %s/%s_%d.vmdk", datastore, vmName, vmName, n)
	}
	u := unit
	uuid := sha1.Sum([]byte(file))
	return &types.VirtualDeviceConfigSpec{
		Operation:     types.VirtualDeviceConfigSpecOperationAdd,
		FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate,
		Device: &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           diskKey(bus, unit),
				ControllerKey: 1000 + bus,
				UnitNumber:    &u,
				DeviceInfo:    &types.Description{Label: fmt.Sprintf("Hard disk %d", n+1), Summary: fmt.Sprintf("%d KB", capacity/1024)},
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: file},
					DiskMode:                     string(types.VirtualDiskModePersistent),
					ThinProvisioned:              types.NewBool(true),
					Uuid:                         "6000C29" + strings.ToUpper(hex.EncodeToString(uuid[:]))[:25],
				},
			},
			CapacityInKB:    capacity / 1024,
			CapacityInBytes: capacity,
		},
	}
}

func rdmDisk(vmName string, n int, bus, unit int32, datastore string, capacity int64, mode, lunName string) (*types.VirtualDeviceConfigSpec, string, string) {
	canonical, lunUUID := lunIDs(lunName)
	u := unit
	return &types.VirtualDeviceConfigSpec{
		Operation:     types.VirtualDeviceConfigSpecOperationAdd,
		FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate,
		Device: &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           diskKey(bus, unit),
				ControllerKey: 1000 + bus,
				UnitNumber:    &u,
				DeviceInfo:    &types.Description{Label: fmt.Sprintf("Hard disk %d", n+1), Summary: fmt.Sprintf("%d KB", capacity/1024)},
				Backing: &types.VirtualDiskRawDiskMappingVer1BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
						FileName: fmt.Sprintf("[%s] %s/%s_%d.vmdk", datastore, vmName, vmName, n),
					},
					LunUuid:           lunUUID,
					DeviceName:        "/vmfs/devices/disks/" + canonical,
					CompatibilityMode: mode,
				},
			},
			CapacityInKB:    capacity / 1024,
			CapacityInBytes: capacity,
		},
	}, canonical, lunUUID
}

// vmMO returns the vim25 view of a VM in the registry, whichever Go type holds it.
func vmMO(ref types.ManagedObjectReference) *mo.VirtualMachine {
	switch vm := simulator.Map.Get(ref).(type) {
	case *simulator.VirtualMachine:
		return &vm.VirtualMachine
	case *labVM:
		return &vm.VirtualMachine.VirtualMachine
	}
	return nil
}

type guestPlan struct {
	guestID, fullName, hostName, ip string
	tools                           types.VirtualMachineToolsStatus
}

// setGuest fills in what VMware Tools would report from inside a running guest.
func setGuest(m *mo.VirtualMachine, g guestPlan) {
	m.Config.GuestFullName = g.fullName
	m.Summary.Config.GuestFullName = g.fullName
	running := m.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
	status := g.tools
	runState := types.VirtualMachineToolsRunningStatusGuestToolsRunning
	versionStatus := "guestToolsCurrent"
	switch {
	case status == types.VirtualMachineToolsStatusToolsNotInstalled:
		runState = types.VirtualMachineToolsRunningStatusGuestToolsNotRunning
		versionStatus = "guestToolsNotInstalled"
	case !running:
		status = types.VirtualMachineToolsStatusToolsNotRunning
		runState = types.VirtualMachineToolsRunningStatusGuestToolsNotRunning
	case status == types.VirtualMachineToolsStatusToolsOld:
		versionStatus = "guestToolsNeedUpgrade"
	}
	m.Guest.ToolsStatus = status
	m.Guest.ToolsRunningStatus = string(runState)
	m.Guest.ToolsVersionStatus2 = versionStatus
	m.Guest.GuestId = g.guestID
	m.Guest.GuestFullName = g.fullName
	if running && runState == types.VirtualMachineToolsRunningStatusGuestToolsRunning {
		m.Guest.GuestState = "running"
		m.Guest.HostName = g.hostName
		m.Guest.IpAddress = g.ip
		m.Summary.Guest.HostName = g.hostName
		m.Summary.Guest.IpAddress = g.ip
	} else {
		m.Guest.GuestState = "notRunning"
	}
	m.Summary.Guest.ToolsStatus = status
	m.Summary.Guest.ToolsRunningStatus = string(runState)
	m.Summary.Guest.GuestId = g.guestID
	m.Summary.Guest.GuestFullName = g.fullName
}

func (b *builder) createVM(folder *object.Folder, host *object.HostSystem, spec types.VirtualMachineConfigSpec, powerOn bool) (types.ManagedObjectReference, error) {
	res, err := taskResult(folder.CreateVM(b.ctx, spec, b.pool, host))
	if err != nil {
		return types.ManagedObjectReference{}, fmt.Errorf("creating %s: %v", spec.Name, err)
	}
	ref := res.(types.ManagedObjectReference)
	// Every VM of the estate is a labVM (see lab_vm.go), before anything else touches it.
	if _, err := adoptVM(ref); err != nil {
		return ref, err
	}
	if powerOn {
		if _, err := taskResult(object.NewVirtualMachine(b.c, ref).PowerOn(b.ctx)); err != nil {
			return ref, fmt.Errorf("powering on %s: %v", spec.Name, err)
		}
	}
	return ref, nil
}

func (b *builder) exchangeServers() error {
	folder, err := b.vmFolder(exchangeFolder)
	if err != nil {
		return err
	}
	for i, p := range exchangePlans() {
		host := b.hosts[i%len(b.hosts)]
		// Folders on the database and log datastores; the VM home folder on the system
		// datastore is made by CreateVM itself.
		for _, d := range p.disks {
			if d.datastore != systemDatastore {
				if err := os.MkdirAll(localPath(b.dsByName[d.datastore], p.name), 0o700); err != nil {
					return err
				}
			}
		}
		spec := types.VirtualMachineConfigSpec{
			Name:                  p.name,
			GuestId:               string(types.VirtualMachineGuestOsIdentifierWindows9Server64Guest),
			NumCPUs:               8,
			NumCoresPerSocket:     4,
			MemoryMB:              48 * 1024,
			Annotation:            "Exchange mailbox server: " + p.description,
			ChangeTrackingEnabled: types.NewBool(p.cbt),
			Files:                 &types.VirtualMachineFileInfo{VmPathName: "[" + systemDatastore + "]"},
		}
		spec.DeviceChange = append(spec.DeviceChange, nic())
		buses := map[int32]bool{}
		for _, d := range p.disks {
			if !buses[d.bus] {
				buses[d.bus] = true
				spec.DeviceChange = append(spec.DeviceChange, scsiController(d.bus))
			}
		}
		var rdms []types.BaseVirtualDeviceConfigSpec
		disks := make([]Disk, len(p.disks))
		for n, d := range p.disks {
			disks[n] = Disk{
				Key: diskKey(d.bus, d.unit), Label: fmt.Sprintf("Hard disk %d", n+1),
				Controller: fmt.Sprintf("SCSI(%d:%d)", d.bus, d.unit), Backing: d.backing,
				DatastoreName: d.datastore, Datastore: b.dsByName[d.datastore].Self.Value,
				CapacityBytes: d.capacity, Role: d.role, Databases: d.databases,
			}
			if disks[n].Databases == nil {
				disks[n].Databases = []string{}
			}
			switch d.backing {
			case "flat":
				change := flatDisk(p.name, n, d.bus, d.unit, d.datastore, d.capacity)
				spec.DeviceChange = append(spec.DeviceChange, change)
				disks[n].DiskMode = string(types.VirtualDiskModePersistent)
				disks[n].FileName = change.Device.(*types.VirtualDisk).Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName
			default:
				mode, diskMode := string(types.VirtualDiskCompatibilityModePhysicalMode), string(types.VirtualDiskModeIndependent_persistent)
				if d.backing == "rdm-virtual" {
					mode, diskMode = string(types.VirtualDiskCompatibilityModeVirtualMode), string(types.VirtualDiskModePersistent)
				}
				lunName := fmt.Sprintf("%s/%s/%s", p.name, d.role, strings.Join(d.databases, "+"))
				change, canonical, lunUUID := rdmDisk(p.name, n, d.bus, d.unit, d.datastore, d.capacity, mode, lunName)
				rdms = append(rdms, change)
				disks[n].DiskMode = diskMode
				disks[n].FileName = change.Device.(*types.VirtualDisk).Backing.(*types.VirtualDiskRawDiskMappingVer1BackingInfo).FileName
				disks[n].LunUUID, disks[n].CanonicalName = lunUUID, canonical
				disks[n].DeviceName = "/vmfs/devices/disks/" + canonical
				b.luns = append(b.luns, Lun{canonical, lunUUID, d.capacity, p.name,
					fmt.Sprintf("%s of %s (%s)", d.role, strings.Join(d.databases, ", "), d.backing)})
			}
		}

		ref, err := b.createVM(folder, host, spec, true)
		if err != nil {
			return err
		}
		if len(rdms) > 0 {
			// RDM disks go through ReconfigVM_Task on the lab's labVM, the same path a client
			// would take: the simulator's own code cannot add them.
			vm := object.NewVirtualMachine(b.c, ref)
			if _, err := taskResult(vm.Reconfigure(b.ctx, types.VirtualMachineConfigSpec{DeviceChange: rdms})); err != nil {
				return fmt.Errorf("adding RDM disks to %s: %v", p.name, err)
			}
		}
		m := vmMO(ref)
		hostName := strings.ToLower(p.name) + ".corp.bulwark.test"
		setGuest(m, guestPlan{
			guestID:  string(types.VirtualMachineGuestOsIdentifierWindows9Server64Guest),
			fullName: "Microsoft Windows Server 2016 or later (64-bit)", hostName: hostName,
			ip: fmt.Sprintf("10.20.30.%d", 11+i), tools: types.VirtualMachineToolsStatusToolsOk,
		})

		for n, d := range p.disks {
			var local string
			var size int64
			var sum string
			switch d.backing {
			case "flat":
				local, size, sum, err = b.fillFlatDisk(p.name, disks[n], d)
			case "rdm-virtual":
				local, size, sum, err = b.fillVirtualRDM(p.name, disks[n])
			default:
				continue
			}
			if err != nil {
				return err
			}
			disks[n].LocalPath, disks[n].ContentBytes, disks[n].ContentSHA256 = local, size, sum
		}

		entry := ExchangeVM{
			Entity: Entity{p.name, ref.Value}, Layout: p.layout, Description: p.description,
			InstanceUUID: m.Config.InstanceUuid, BiosUUID: m.Config.Uuid, Host: host.Reference().Value,
			PowerState: string(m.Runtime.PowerState), CBTEnabled: p.cbt, Owner: "Messaging team",
			Disks: disks,
		}
		for _, db := range p.dbs {
			entry.Databases = append(entry.Databases, Database{
				Name: db.name, DiskKey: disks[db.disk].Key, LogsKey: disks[db.logs].Key, Layout: p.disks[db.disk].backing,
			})
		}
		if p.annotated {
			v := attributeValue(p)
			entry.CustomAttribute = &v
		}
		b.estate.ExchangeVMs = append(b.estate.ExchangeVMs, entry)
	}
	return nil
}

// fillFlatDisk writes a VMDK descriptor and a flat extent with recognisable content, so that
// a backup read over /folder gets real bytes: a header naming the VM, disk and databases,
// then 64 KiB blocks of pseudo-random data with every fourth block zero (as a thin disk has).
func (b *builder) fillFlatDisk(vmName string, disk Disk, d diskPlan) (string, int64, string, error) {
	p, err := parseDatastorePath(disk.FileName)
	if err != nil {
		return "", 0, "", err
	}
	ds := b.dsByName[p.Datastore]
	extent := strings.TrimSuffix(p.Path, ".vmdk") + "-flat.vmdk"
	descriptor := fmt.Sprintf(`# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=fffffffe
parentCID=ffffffff
createType="vmfs"

# Extent description
RW %d VMFS "%s"

# The Disk Data Base
#DDB

ddb.adapterType = "pvscsi"
ddb.thinProvisioned = "1"
ddb.virtualHWVersion = "13"
`, d.capacity/512, path.Base(extent))
	if err := os.WriteFile(localPath(ds, p.Path), []byte(descriptor), 0o600); err != nil {
		return "", 0, "", err
	}

	return b.fillContent(localPath(ds, extent), vmName, disk)
}

// fillVirtualRDM gives a virtual-mode RDM's LUN content the lab can serve: vSphere reads a
// virtual-mode RDM through its mapping extent (NAME_N-rdm.vmdk), and the lab has no LUN
// behind it, so the extent file itself holds the LUN's blocks (--disk-mib MiB). A VM
// snapshot captures virtual-mode RDMs, so an image backup reads and restores them over
// /folder like flat disks.
func (b *builder) fillVirtualRDM(vmName string, disk Disk) (string, int64, string, error) {
	p, err := parseDatastorePath(disk.FileName)
	if err != nil {
		return "", 0, "", err
	}
	ds := b.dsByName[p.Datastore]
	extent := mappingExtent(p.Path, string(types.VirtualDiskCompatibilityModeVirtualMode))
	return b.fillContent(localPath(ds, extent), vmName, disk)
}

// fillContent writes the lab's recognisable disk content to a local file and returns its
// path, size and SHA-256.
func (b *builder) fillContent(local, vmName string, disk Disk) (string, int64, string, error) {
	f, err := os.Create(local)
	if err != nil {
		return "", 0, "", err
	}
	defer f.Close()
	const block = 64 * 1024
	total := int64(b.o.diskMiB) * 1024 * 1024
	seed := sha1.Sum([]byte(vmName + "/" + disk.Label))
	rng := rand.New(rand.NewSource(int64(seed[0])<<24 | int64(seed[1])<<16 | int64(seed[2])<<8 | int64(seed[3])))
	hash := sha256.New()
	out := io.MultiWriter(f, hash)
	buf := make([]byte, block)
	for written, n := int64(0), 0; written < total; written, n = written+block, n+1 {
		switch {
		case n == 0:
			for i := range buf {
				buf[i] = 0
			}
			header := fmt.Sprintf("BULWARK-LAB VMDK\nvm=%s\ndisk=%s key=%d %s\nrole=%s\ndatabases=%s\n"+
				"(lab stand-in content, not a real NTFS volume or ESE database)\n",
				vmName, disk.Label, disk.Key, disk.Controller, disk.Role, strings.Join(disk.Databases, ","))
			copy(buf, header)
		case n%4 == 3:
			for i := range buf {
				buf[i] = 0
			}
		default:
			rng.Read(buf)
		}
		chunk := buf
		if rest := total - written; rest < block {
			chunk = buf[:rest]
		}
		if _, err := out.Write(chunk); err != nil {
			return "", 0, "", err
		}
	}
	return local, total, hex.EncodeToString(hash.Sum(nil)), nil
}

var workloadRoles = []struct {
	role, guestID, fullName string
}{
	{"WEB", "ubuntu64Guest", "Ubuntu Linux (64-bit)"},
	{"APP", "windows9Server64Guest", "Microsoft Windows Server 2016 or later (64-bit)"},
	{"FILE", "windows9Server64Guest", "Microsoft Windows Server 2016 or later (64-bit)"},
	{"SQL", "windows9Server64Guest", "Microsoft Windows Server 2016 or later (64-bit)"},
	{"DC", "windows9Server64Guest", "Microsoft Windows Server 2016 or later (64-bit)"},
	{"PRINT", "winLonghorn64Guest", "Microsoft Windows Server 2008 (64-bit)"},
	{"CITRIX", "windows9Server64Guest", "Microsoft Windows Server 2016 or later (64-bit)"},
	{"BUILD", "ubuntu64Guest", "Ubuntu Linux (64-bit)"},
}

// ordinaryVMs creates the rest of the estate: VMs Bulwark lists but does not treat as Exchange
// servers, spread over hosts, datastores and one folder per role. (Creating them on several
// goroutines was tried: the simulator's locks make it no faster on two cores.)
func (b *builder) ordinaryVMs() error {
	folders := make([]*object.Folder, len(workloadRoles))
	for i, r := range workloadRoles {
		if i >= b.o.vms {
			break
		}
		f, err := b.vmFolder(workloadFolder + "/" + r.role)
		if err != nil {
			return err
		}
		folders[i] = f
	}
	b.estate.OrdinaryVMs = make([]OrdinaryVM, 0, b.o.vms)
	for i := 0; i < b.o.vms; i++ {
		entry, err := b.ordinaryVM(i, folders[i%len(workloadRoles)])
		if err != nil {
			return err
		}
		b.estate.OrdinaryVMs = append(b.estate.OrdinaryVMs, entry)
	}
	return nil
}

func (b *builder) ordinaryVM(i int, folder *object.Folder) (OrdinaryVM, error) {
	general := b.generalDatastores()
	r := workloadRoles[i%len(workloadRoles)]
	name := fmt.Sprintf("%s-%04d", r.role, i+1)
	datastore := general[i%len(general)]
	spec := types.VirtualMachineConfigSpec{
		Name:     name,
		GuestId:  r.guestID,
		NumCPUs:  2,
		MemoryMB: 4096,
		Files:    &types.VirtualMachineFileInfo{VmPathName: "[" + datastore + "]"},
	}
	spec.DeviceChange = append(spec.DeviceChange, scsiController(0), nic(), flatDisk(name, 0, 0, 0, datastore, 40*gib))
	if i%3 == 0 {
		spec.DeviceChange = append(spec.DeviceChange, flatDisk(name, 1, 0, 1, datastore, 200*gib))
	}
	if i%5 == 0 {
		spec.ChangeTrackingEnabled = types.NewBool(true)
	}
	powerOn := i%10 != 9
	ref, err := b.createVM(folder, b.hosts[i%len(b.hosts)], spec, powerOn)
	if err != nil {
		return OrdinaryVM{}, err
	}
	tools := types.VirtualMachineToolsStatusToolsOk
	switch {
	case i%13 == 12:
		tools = types.VirtualMachineToolsStatusToolsNotInstalled
	case i%7 == 6:
		tools = types.VirtualMachineToolsStatusToolsOld
	}
	var entry OrdinaryVM
	simulator.Map.WithLock(ref, func() {
		m := vmMO(ref)
		setGuest(m, guestPlan{
			guestID: r.guestID, fullName: r.fullName, hostName: strings.ToLower(name) + ".corp.bulwark.test",
			ip: fmt.Sprintf("10.%d.%d.%d", 40+i/65025, (i/255)%255, i%255+1), tools: tools,
		})
		entry = OrdinaryVM{Entity: Entity{name, ref.Value}, PowerState: string(m.Runtime.PowerState)}
	})
	// A few VMs carry snapshots somebody forgot, as in every real estate.
	if i%50 == 1 {
		vm := object.NewVirtualMachine(b.c, ref)
		for _, s := range []string{"before patching", "after patching"} {
			if _, err := taskResult(vm.CreateSnapshot(b.ctx, s, "taken by the lab", false, false)); err != nil {
				return entry, err
			}
			entry.Snapshots = append(entry.Snapshots, s)
		}
	}
	if i%4 == 0 {
		entry.Owner = "Platform team"
	}
	return entry, nil
}

// attributes defines the custom attributes (after every VM exists: the simulator offers a new
// field only to the VMs present when it is defined) and sets their values.
func (b *builder) attributes() error {
	cfm, err := object.GetCustomFieldsManager(b.c)
	if err != nil {
		return err
	}
	exchange, err := cfm.Add(b.ctx, ExchangeAttribute, "VirtualMachine", nil, nil)
	if err != nil {
		return err
	}
	owner, err := cfm.Add(b.ctx, OwnerAttribute, "VirtualMachine", nil, nil)
	if err != nil {
		return err
	}
	for _, vm := range b.estate.ExchangeVMs {
		ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: vm.Moref}
		if vm.CustomAttribute != nil {
			if err := cfm.Set(b.ctx, ref, exchange.Key, *vm.CustomAttribute); err != nil {
				return err
			}
		}
		if err := cfm.Set(b.ctx, ref, owner.Key, vm.Owner); err != nil {
			return err
		}
	}
	for _, vm := range b.estate.OrdinaryVMs {
		if vm.Owner != "" {
			ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: vm.Moref}
			if err := cfm.Set(b.ctx, ref, owner.Key, vm.Owner); err != nil {
				return err
			}
		}
	}
	return nil
}

// scsiLuns lists the estate's LUNs (VMFS extents and RDMs) among every host's SCSI devices, as
// ESXi would after a rescan, so that a LUN can be matched to an RDM by its NAA id.
func (b *builder) scsiLuns() error {
	sort.SliceStable(b.luns, func(i, j int) bool { return b.luns[i].CanonicalName < b.luns[j].CanonicalName })
	for _, h := range b.hosts {
		host := simulator.Map.Get(h.Reference()).(*simulator.HostSystem)
		if host.Config == nil || host.Config.StorageDevice == nil {
			continue
		}
		for _, l := range b.luns {
			host.Config.StorageDevice.ScsiLun = append(host.Config.StorageDevice.ScsiLun, &types.HostScsiDisk{
				ScsiLun: types.ScsiLun{
					HostDevice:    types.HostDevice{DeviceName: "/vmfs/devices/disks/" + l.CanonicalName, DeviceType: "disk"},
					Key:           "key-vim.host.ScsiDisk-" + l.LunUUID,
					Uuid:          l.LunUUID,
					CanonicalName: l.CanonicalName,
					DisplayName:   fmt.Sprintf("LIO-ORG Fibre Channel Disk (%s)", l.CanonicalName),
					LunType:       "disk",
					Vendor:        "LIO-ORG",
					Model:         "FILEIO",
				},
				Capacity:   types.HostDiskDimensionsLba{BlockSize: 512, Block: l.CapacityBytes / 512},
				DevicePath: "/vmfs/devices/disks/" + l.CanonicalName,
			})
		}
	}
	return nil
}
