// Command bulwark-lab serves a simulated vCenter that holds an Exchange estate, for Bulwark's
// tests, benchmarks and demos.
//
// It is built on govmomi's vSphere API simulator (Debian's golang-github-vmware-govmomi-dev,
// 0.24) and adds what Bulwark needs from a vCenter that the simulator lacks: Exchange mailbox
// servers with raw device mappings that survive snapshot operations, paging of
// RetrievePropertiesEx, realistic datastores and custom attributes. See README.md beside this
// file for the contract (flags, printed lines, estate JSON) and for what is overridden and why.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
)

type options struct {
	listen      string
	vms         int
	hosts       int
	user        string
	password    string
	stateDir    string
	diskMiB     int
	pageCap     int
	folderMiBps float64
	verbose     bool
	stdinEOF    bool

	guestUser, guestPassword, guestLog string
	guestShutdownSeconds               float64
}

func parseFlags() options {
	var o options
	flag.StringVar(&o.listen, "listen", "127.0.0.1:0", "loopback address to serve on; port 0 picks a free port")
	flag.IntVar(&o.vms, "vms", 20, "number of ordinary (non-Exchange) VMs; the Exchange servers come on top")
	flag.IntVar(&o.hosts, "hosts", 0, "ESXi hosts in the cluster; 0 chooses 4, or one per 250 VMs for larger estates")
	flag.StringVar(&o.user, "user", "administrator@vsphere.local", "the only user name the lab accepts")
	flag.StringVar(&o.password, "password", "", "the only password the lab accepts; empty makes a random one")
	flag.StringVar(&o.stateDir, "state-dir", "", "folder for datastores and estate.json; empty makes a temporary one, removed on exit")
	flag.IntVar(&o.diskMiB, "disk-mib", 4, "MiB of content written into each Exchange flat VMDK")
	flag.Float64Var(&o.folderMiBps, "folder-mib-per-second", 0, "if > 0, /folder transfers run at most this many MiB/s each, like a busy datastore")
	flag.IntVar(&o.pageCap, "page-cap", 0, "if > 0, RetrievePropertiesEx never returns more objects than this in one page, like a busy vCenter")
	flag.BoolVar(&o.verbose, "verbose", false, "keep the simulator's own log lines on stderr")
	flag.BoolVar(&o.stdinEOF, "exit-on-stdin-eof", false, "also stop when stdin reaches end of file (a parent that dies closes the pipe)")
	flag.StringVar(&o.guestUser, "guest-user", `CORP\backup`, "the only guest account the stand-in guest accepts for guest operations")
	flag.StringVar(&o.guestPassword, "guest-password", "", "its password; empty makes a random one (in estate.json)")
	flag.StringVar(&o.guestLog, "guest-log", "", "file the stand-in guest appends its processes to (JSON lines); empty: guest-operations.jsonl in the state folder")
	flag.Float64Var(&o.guestShutdownSeconds, "guest-shutdown-seconds", 0.5, "seconds a guest takes to power off after ShutdownGuest")
	flag.Parse()
	return o
}

func main() {
	o := parseFlags()
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "bulwark-lab: %v\n", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.vms < 0 {
		return fmt.Errorf("--vms must not be negative")
	}
	host, _, err := net.SplitHostPort(o.listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %v", o.listen, err)
	}
	// The lab is a test peer: it must never be reachable from outside this machine.
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--listen %q: only loopback addresses are allowed", o.listen)
	}
	if !o.verbose {
		// The simulator logs every WaitForUpdates round; that is noise for Bulwark's tests.
		log.SetOutput(ioutil.Discard)
	}
	if o.password == "" {
		o.password = randomPassword()
	}
	if o.guestPassword == "" {
		o.guestPassword = randomPassword()
	}
	if o.guestShutdownSeconds < 0 {
		return fmt.Errorf("--guest-shutdown-seconds must not be negative")
	}
	guestShutdownDelay = time.Duration(o.guestShutdownSeconds * float64(time.Second))

	ownState := o.stateDir == ""
	if ownState {
		o.stateDir, err = ioutil.TempDir(stateRoot(), "bulwark-lab-")
		if err != nil {
			return err
		}
	} else if err = os.MkdirAll(o.stateDir, 0o700); err != nil {
		return err
	}
	cleanup := func() {
		if ownState {
			_ = os.RemoveAll(o.stateDir)
		}
	}
	defer cleanup()

	started := time.Now()

	// An empty model: the estate is laid out by buildEstate, with names an operator recognises,
	// rather than the simulator's DC0_C0_H0 defaults.
	model := simulator.VPX()
	model.Datacenter = 0
	model.Cluster = 0
	model.ClusterHost = 0
	model.Host = 0
	model.Portgroup = 0
	model.Datastore = 0
	model.Machine = 0
	model.Autostart = false
	if err = model.Create(); err != nil {
		return fmt.Errorf("creating the simulator model: %v", err)
	}

	installPagingCollector(o.pageCap)
	if o.guestLog == "" {
		o.guestLog = filepath.Join(o.stateDir, "guest-operations.jsonl")
		_ = os.Remove(o.guestLog) // a kept --state-dir starts with an empty guest log
	}
	if o.guestLog, err = filepath.Abs(o.guestLog); err != nil {
		return err
	}
	if err = installStandInGuest(o.guestUser, o.guestPassword, o.guestLog); err != nil {
		return err
	}

	ctx := context.Background()
	client, err := vim25.NewClient(ctx, model.Service)
	if err != nil {
		return fmt.Errorf("in-process client: %v", err)
	}
	estate, err := buildEstate(ctx, client, o)
	if err != nil {
		return fmt.Errorf("building the estate: %v", err)
	}
	built := time.Since(started)

	cert, thumbprint, err := selfSignedCertificate()
	if err != nil {
		return err
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	model.Service.Listen = &url.URL{Host: o.listen, User: url.UserPassword(o.user, o.password)}
	server := model.Service.NewServer()
	// Set before the URL is printed, so before any client can connect.
	server.Config.Handler = throttleFolder(serveVMX(server.Config.Handler), o.folderMiBps*1024*1024)

	estate.URL = server.URL.String()
	estate.Host = server.URL.Hostname()
	estate.Port = mustAtoi(server.URL.Port())
	estate.Username = o.user
	estate.Password = o.password
	estate.TLSThumbprint = thumbprint
	estate.GuestUsername = o.guestUser
	estate.GuestPassword = o.guestPassword
	estate.GuestLog = o.guestLog
	estate.StartupSeconds = time.Since(started).Seconds()
	estate.BuildSeconds = built.Seconds()

	estatePath := filepath.Join(o.stateDir, "estate.json")
	if err = writeJSON(estatePath, estate); err != nil {
		return err
	}

	// The URL line comes last: a reader that has seen it knows the lab is serving and the
	// estate file is complete.
	fmt.Printf("BULWARK_LAB_ESTATE=%s\n", estatePath)
	fmt.Printf("BULWARK_LAB_URL=%s\n", server.URL.String())
	_ = os.Stdout.Sync()
	fmt.Fprintf(os.Stderr, "bulwark-lab: %d VMs (%d Exchange) on %d hosts, ready in %.2fs at %s\n",
		estate.VMCountTotal, len(estate.ExchangeVMs), len(estate.Hosts), estate.StartupSeconds,
		server.URL.Host)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if o.stdinEOF {
		go watchStdin(stop)
	}
	sig := <-stop
	fmt.Fprintf(os.Stderr, "bulwark-lab: %v, stopping\n", sig)
	// Closing waits for requests in flight (a client may be in a long WaitForUpdatesEx);
	// give them a moment, then leave: the state folder is removed either way (deferred).
	closed := make(chan struct{})
	go func() {
		server.CloseClientConnections()
		server.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
	}
	return nil
}

// stateRoot picks where a temporary state directory goes: $BULWARK_LAB_TMPDIR if set, else
// /dev/shm when it is a writable tmpfs with room to spare (a 5,000-VM estate is ~30,000 small
// files; on this project's virtual disks creating them takes several times longer than in
// memory, and varies with the neighbours' I/O), else the system's temporary folder.
func stateRoot() string {
	if dir := os.Getenv("BULWARK_LAB_TMPDIR"); dir != "" {
		return dir
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err == nil && int64(st.Bavail)*int64(st.Bsize) > 1<<30 {
		if probe, err := ioutil.TempDir("/dev/shm", ".bulwark-lab-probe-"); err == nil {
			_ = os.Remove(probe)
			return "/dev/shm"
		}
	}
	return os.TempDir()
}

type stdinClosed struct{}

func (stdinClosed) String() string { return "stdin closed" }
func (stdinClosed) Signal()        {}

// watchStdin stops the lab when stdin reaches end of file: a test fixture that gives the lab a
// pipe as stdin and then dies (without sending SIGTERM) does not leave the lab running.
func watchStdin(stop chan<- os.Signal) {
	_, _ = io.Copy(ioutil.Discard, os.Stdin)
	stop <- stdinClosed{}
}
